package dingtalk

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/tokend/tokend/dingtalkapi"
)

// BanSniffBytes is how much of a body IsBan looks at. A caller that streams a response (the proxy)
// passes at least this much of its beginning, or the whole body when it is shorter.
const BanSniffBytes = 8 << 10

// banMarkers are what DingTalk's per-IP block page says about itself and an error page of a proxy or
// load balancer never does: the punish path and x5sec token of Alibaba's anti-abuse layer, and the
// page's own Chinese wording ("access refused", "you call too often"). They are matched lower-cased
// in the first BanSniffBytes of the page. Generic English words ("block", "denied", "forbidden") are
// not markers: they occur in ordinary error pages, CSS (display:block) included.
var banMarkers = [][]byte{
	[]byte("/punish"),
	[]byte("punish?"),
	[]byte("x5sec"),
	[]byte("访问被拒绝"),
	[]byte("访问频率过高"),
	[]byte("访问过于频繁"),
	[]byte("请求过于频繁"),
}

// IsBan reports whether an answer from DingTalk (or from something on the way to it) is the per-IP
// block that stops every call from the egress IP for about five minutes. status is the HTTP status,
// contentType the Content-Type header and body the answer's body or a prefix of it (only the first
// BanSniffBytes are read). It is a ban when:
//
//   - the body is the punish JSON, {"status":1111,...} or {"punish":"deny",...}, whatever the status;
//   - the body is an HTML page carrying one of the block page's own markers, whatever the status;
//   - the body is an HTML page without them sent with a status the block comes with (200, 403, 405,
//     429): DingTalk's APIs answer JSON, and the legacy one answers everything with 200.
//
// Any other HTML page, typically a 5xx error page of a proxy or load balancer, is not a ban: the
// client reports it as "http_<status>", a retryable failure. IsBan is pure and safe for concurrent use.
func IsBan(status int, contentType string, body []byte) bool {
	if len(body) > BanSniffBytes {
		body = body[:BanSniffBytes]
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n\ufeff")
	if isHTML(contentType, trimmed) {
		switch status {
		case http.StatusOK, http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusTooManyRequests:
			return true
		}
		return hasBanMarker(trimmed)
	}
	return isPunishJSON(trimmed)
}

// isHTML reports whether an answer is an HTML page: by its Content-Type or, when a proxy sent none
// or a wrong one, by its first byte.
func isHTML(contentType string, trimmed []byte) bool {
	return strings.Contains(strings.ToLower(contentType), "text/html") || bytes.HasPrefix(trimmed, []byte("<"))
}

func hasBanMarker(page []byte) bool {
	lower := bytes.ToLower(page)
	for _, m := range banMarkers {
		if bytes.Contains(lower, m) {
			return true
		}
	}
	return false
}

// banBody is the JSON shape of DingTalk's per-IP block: {"status":1111,"punish":"deny",...}.
type banBody struct {
	Status json.RawMessage `json:"status"`
	Punish json.RawMessage `json:"punish"`
}

func isPunishJSON(trimmed []byte) bool {
	if !bytes.HasPrefix(trimmed, []byte("{")) {
		return false
	}
	var b banBody
	if json.Unmarshal(trimmed, &b) != nil {
		return false
	}
	punish := len(b.Punish) > 0 && string(b.Punish) != "null"
	st, _ := dingtalkapi.ParseCode(b.Status)
	return punish || st == "1111"
}

// checkBan returns the client's error for an answer IsBan recognises, and for any other HTML page
// an "http_<status>" failure (ClassUnavailable) when its status is not 2xx, a "bad_response" when it
// is. It returns nil for everything else, which the envelope parsers then read.
func checkBan(status int, contentType string, body []byte) *Error {
	if IsBan(status, contentType, body) {
		return &Error{Family: FamilyTransport, Status: status, Code: CodeIPBan, Message: "per-ip block", Class: ClassBanned}
	}
	if !isHTML(contentType, bytes.TrimLeft(body, " \t\r\n\ufeff")) {
		return nil
	}
	if status >= 200 && status < 300 {
		return badResponse(status, "html page instead of json")
	}
	return &Error{Family: FamilyTransport, Status: status, Code: "http_" + strconv.Itoa(status), Message: "html error page", Class: ClassUnavailable}
}
