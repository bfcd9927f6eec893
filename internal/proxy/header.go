// The headers that pass through the proxy, and the access_token parameters taken out of the query.

package proxy

import (
	"net/http"
	"net/url"
	"strings"
)

// hopByHop are the headers of one connection (RFC 9110 7.6.1), never forwarded.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// dropRequest are the caller's headers that never reach DingTalk besides the hop-by-hop ones: its
// credentials for tokend, cookies, a placeholder token, tokend's own gateway headers, and what the
// transport sets itself.
var dropRequest = map[string]bool{
	"Authorization": true, "Cookie": true, "X-Acs-Dingtalk-Access-Token": true, "X-Tokend-App": true,
	"X-Tokend-Corp": true, "Host": true, "Content-Length": true, "Expect": true,
}

func copyRequestHeader(dst, src http.Header) {
	conn := connectionTokens(src)
	for k, vv := range src {
		if hopByHop[k] || dropRequest[k] || conn[k] {
			continue
		}
		dst[k] = vv
	}
	if _, ok := dst["User-Agent"]; !ok {
		// Without it the transport would announce Go's own.
		dst["User-Agent"] = []string{""}
	}
}

func copyResponseHeader(dst, src http.Header) {
	conn := connectionTokens(src)
	for k, vv := range src {
		if hopByHop[k] || conn[k] || k == "Set-Cookie" || k == "Set-Cookie2" {
			continue
		}
		dst[k] = vv
	}
}

// connectionTokens are the header names a Connection header lists (hop-by-hop too).
func connectionTokens(h http.Header) map[string]bool {
	vv := h["Connection"]
	if len(vv) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, v := range vv {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				out[http.CanonicalHeaderKey(f)] = true
			}
		}
	}
	return out
}

// stripToken removes every access_token parameter from a raw query, keeping the rest as it was
// written (order and escaping).
func stripToken(raw string) string {
	if raw == "" || !strings.Contains(raw, "access") && !strings.Contains(raw, "%") {
		return raw
	}
	var b strings.Builder
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, _, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil && dk == "access_token" || k == "access_token" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(part)
	}
	return b.String()
}
