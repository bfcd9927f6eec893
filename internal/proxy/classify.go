package proxy

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"

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
// envelopes (the rules of the Go client's CheckLegacy, CheckNew and IsInvalidToken) and its ban page
// (the broker's recognition).
func classify(f proxyrule.Family, status int, contentType string, body []byte) verdict {
	if isBan(status, contentType, body) {
		return verdict{ban: true}
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return verdict{}
	}
	ok2xx := status >= 200 && status < 300
	// Fast paths for what nearly every answer is, a success, without decoding it: no errcode at all
	// (new API), or a single errcode that is 0 (legacy).
	switch n := bytes.Count(body, []byte(`"errcode"`)); {
	case n == 0 && (f == proxyrule.OAPI || ok2xx):
		return verdict{}
	case n == 1 && (bytes.Contains(body, []byte(`"errcode":0,`)) || bytes.Contains(body, []byte(`"errcode":0}`))) && ok2xx:
		return verdict{}
	}
	var env struct {
		Errcode json.RawMessage `json:"errcode"`
		SubCode json.RawMessage `json:"sub_code"`
		Code    json.RawMessage `json:"code"`
	}
	if json.Unmarshal(body, &env) != nil {
		return verdict{}
	}
	// Legacy answers say everything with HTTP 200 and errcode; the api host answers some paths the
	// same way.
	if code, ok := jsonCode(env.Errcode); ok && code != "0" && (f == proxyrule.OAPI || ok2xx) {
		if sub, ok := jsonCode(env.SubCode); ok && code == "88" {
			code = sub
		}
		return verdict{code: code, invalidToken: invalidLegacy[code]}
	}
	// New-API failures: an HTTP error status and {"code","message","requestid"}; branch on code.
	if code, ok := jsonCode(env.Code); ok && f == proxyrule.API && !ok2xx {
		return verdict{code: code, invalidToken: strings.EqualFold(code, "InvalidAuthentication")}
	}
	return verdict{}
}

// invalidLegacy are the legacy codes (errcode, or sub_code under 88) meaning "this token is invalid".
var invalidLegacy = map[string]bool{"40014": true, "42001": true, "40001": true}

// jsonCode reads a code DingTalk sends as a JSON number or string; ok is false when absent, null,
// empty or of another type.
func jsonCode(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		s = strings.TrimSpace(s)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			s = strconv.FormatInt(n, 10)
		}
		return s, s != ""
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return "", false
	}
	if i, err := n.Int64(); err == nil {
		return strconv.FormatInt(i, 10), true
	}
	if fl, err := n.Float64(); err == nil && fl == math.Trunc(fl) && math.Abs(fl) < 1e15 {
		return strconv.FormatInt(int64(fl), 10), true
	}
	return "", false
}

// isBan recognises DingTalk's per-IP block in any status: an HTML page (unless it is a plain 5xx
// error page from a proxy on the way) or the {"status":1111,"punish":"deny"} JSON. It follows the
// broker's recognition of the same answer (internal/dingtalk).
func isBan(status int, contentType string, body []byte) bool {
	trimmed := bytes.TrimLeft(body, " \t\r\n\ufeff")
	if strings.Contains(strings.ToLower(contentType), "text/html") || bytes.HasPrefix(trimmed, []byte("<")) {
		return status < 500 || looksBlocked(body)
	}
	if !bytes.HasPrefix(trimmed, []byte("{")) || !bytes.Contains(body, []byte("punish")) && !bytes.Contains(body, []byte("1111")) {
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
