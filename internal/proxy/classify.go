package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/tokend/tokend/client"
	"github.com/tokend/tokend/internal/proxyrule"
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

// classify reads a complete answer of family f. It is the one place that knows DingTalk's
// envelopes; the checks are the Go client's (CheckLegacy, CheckNew, IsInvalidToken) and the
// broker's ban recognition.
func classify(f proxyrule.Family, status int, contentType string, body []byte) verdict {
	if isBan(status, contentType, body) {
		return verdict{ban: true}
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return verdict{}
	}
	var err error
	if f == proxyrule.OAPI || (status >= 200 && status < 300) {
		// Legacy answers say everything with HTTP 200 and errcode; the api host answers some paths
		// the same way.
		if err = client.CheckLegacy(body); errors.Is(err, client.ErrMalformedResponse) {
			err = nil
		}
	}
	if err == nil && f == proxyrule.API {
		if err = client.CheckNew(status, body); errors.Is(err, client.ErrMalformedResponse) {
			err = nil
		}
	}
	var de *client.DingTalkError
	if !errors.As(err, &de) {
		return verdict{}
	}
	code := de.Code
	if code == "88" && de.SubCode != "" {
		code = de.SubCode
	}
	return verdict{code: code, invalidToken: client.IsInvalidToken(err)}
}

// isBan recognises DingTalk's per-IP block in any status: an HTML page (unless it is a plain 5xx
// error page from a proxy on the way) or the {"status":1111,"punish":"deny"} JSON. It follows the
// broker's recognition of the same answer (internal/dingtalk).
func isBan(status int, contentType string, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n\ufeff")
	if strings.Contains(strings.ToLower(contentType), "text/html") || bytes.HasPrefix(trimmed, []byte("<")) {
		return status < 500 || looksBlocked(body)
	}
	if !bytes.HasPrefix(trimmed, []byte("{")) {
		return false
	}
	var b struct {
		Status json.RawMessage `json:"status"`
		Punish json.RawMessage `json:"punish"`
	}
	if json.Unmarshal(body, &b) != nil {
		return false
	}
	st := strings.Trim(string(bytes.TrimSpace(b.Status)), `"`)
	return (len(b.Punish) > 0 && string(b.Punish) != "null") || st == "1111"
}

func looksBlocked(body []byte) bool {
	lower := bytes.ToLower(body)
	for _, w := range []string{"punish", "deny", "denied", "block", "forbidden", "拦截", "禁止", "限制", "拒绝"} {
		if bytes.Contains(lower, []byte(w)) {
			return true
		}
	}
	return false
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
