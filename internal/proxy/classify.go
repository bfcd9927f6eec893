package proxy

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"

	"github.com/tokend/tokend/dingtalkapi"
	"github.com/tokend/tokend/internal/dingtalk"
)

// verdict is what a complete, small DingTalk answer says.
type verdict struct {
	// code is DingTalk's error code (legacy errcode, or sub_code under errcode 88; new-API code),
	// "" for a success or an answer without an envelope.
	code string
	// invalidToken: DingTalk rejected the access token (legacy 40014, 42001, 40001, 88/40014; new
	// InvalidAuthentication).
	invalidToken bool
	// ban: the per-IP block page.
	ban bool
}

// classify reads a complete answer, of either family: DingTalk's vocabulary (package dingtalkapi, shared
// with the Go client) for the envelopes and the invalid-token rule, and the broker's ban recognition
// (dingtalk.IsBan) for the block page.
func classify(status int, contentType string, body []byte) verdict {
	trimmed := bytes.TrimLeft(body, " \t\r\n\ufeff")
	isJSON := bytes.HasPrefix(trimmed, []byte("{"))
	// A JSON answer can only be the punish JSON if it names it: skip decoding the others twice.
	if (!isJSON || bytes.Contains(body, []byte("punish")) || bytes.Contains(body, []byte("1111"))) &&
		dingtalk.IsBan(status, contentType, body) {
		return verdict{ban: true}
	}
	if !isJSON {
		return verdict{}
	}
	ok2xx := status >= 200 && status < 300
	// Fast paths for what nearly every answer is, a success, without decoding it: no errcode at all
	// (a new-API success), or a single errcode that is 0 (a legacy success).
	switch n := bytes.Count(body, []byte(`"errcode"`)); {
	case n == 0 && ok2xx:
		return verdict{}
	case n == 1 && ok2xx && (bytes.Contains(body, []byte(`"errcode":0,`)) || bytes.Contains(body, []byte(`"errcode":0}`))):
		return verdict{}
	}
	// Both families answer in either envelope on some paths: Parse tells them apart.
	fail, err := dingtalkapi.Parse(status, body)
	if err != nil || fail == nil {
		return verdict{}
	}
	return verdict{code: fail.Cause(), invalidToken: fail.InvalidToken()}
}

// codeRE is what a DingTalk code may look like to become a metric label; anything else is "other",
// so a misbehaving upstream cannot blow up the label set.
var codeRE = regexp.MustCompile(`^(-?[0-9]{1,10}|[A-Za-z][A-Za-z0-9._-]{0,63})$`)

// resultOf is the metric result of an answer: "ok", DingTalk's code, or http_<status>.
func resultOf(status int, v verdict) string {
	switch {
	case v.code != "" && codeRE.MatchString(v.code):
		return v.code
	case v.code != "":
		return "other"
	case status >= 200 && status < 400:
		return "ok"
	}
	return "http_" + strconv.Itoa(status)
}

// textual reports whether a response of this content type may be an envelope or a block page, and
// so is worth inspecting.
func textual(contentType string) bool {
	ct := strings.ToLower(contentType)
	return ct == "" || strings.Contains(ct, "json") || strings.HasPrefix(ct, "text/")
}
