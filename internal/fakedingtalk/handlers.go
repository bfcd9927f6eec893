package fakedingtalk

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// AccessTokenHeader is where the new API takes the access token (and the only place it looks).
const AccessTokenHeader = "x-acs-dingtalk-access-token"

// Content types as the real hosts send them.
const (
	legacyContentType = "application/json"
	newContentType    = "application/json;charset=utf-8"
)

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	// New API (api.dingtalk.com).
	mux.HandleFunc("POST /v1.0/oauth2/accessToken", s.newAccessToken)
	mux.HandleFunc("POST /v1.0/oauth2/jsapiTickets", s.newJSAPITicket)
	// Legacy API (oapi.dingtalk.com).
	mux.HandleFunc("GET /gettoken", s.legacyGetToken)
	mux.HandleFunc("GET /get_jsapi_ticket", s.legacyGetJSAPITicket)
	// API endpoints that take a token, as a proxied call would use them (api.go).
	s.apiRoutes(mux)
	// Third-party suites, Stream gateway and their control API (isv_routes.go).
	s.isvRoutes(mux)
	// Control API.
	s.controlRoutes(mux)
	// User tokens, Stream tickets, robots, and their control routes.
	s.flowRoutes(mux)
	// Anything else: the legacy host's answer for an unknown URI (HTTP 200, errcode 404).
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeLegacyError(w, 404, "请求的URI地址不存在")
	})
	return mux
}

// legacyGetToken serves GET /gettoken?appkey=&appsecret= and ?corpid=&corpsecret=.
func (s *Server) legacyGetToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	c := call{legacy: true, endpoint: EndpointToken}
	var secret string
	switch {
	case q.Get("appkey") != "":
		c.key, secret = q.Get("appkey"), q.Get("appsecret")
	case q.Get("corpid") != "":
		c.key, secret, c.corp = q.Get("corpid"), q.Get("corpsecret"), true
	}
	proceed, badExpiry := s.admit(w, r, c)
	if !proceed {
		return
	}
	if c.key == "" {
		writeLegacyError(w, 40035, "缺少参数 corpid or appkey")
		return
	}
	now := s.now()
	value, ok := s.issueToken(w, c, secret, c.corp, now)
	if !ok {
		return
	}
	writeJSON(w, legacyContentType, http.StatusOK, struct {
		Errcode     int    `json:"errcode"`
		AccessToken string `json:"access_token"`
		Errmsg      string `json:"errmsg"`
		ExpiresIn   int64  `json:"expires_in"`
	}{0, value, "ok", seconds(s.tokenTTL, badExpiry)})
}

// legacyGetJSAPITicket serves GET /get_jsapi_ticket?access_token=.
func (s *Server) legacyGetJSAPITicket(w http.ResponseWriter, r *http.Request) {
	value := r.URL.Query().Get("access_token")
	if s.isvJSAPITicket(w, r, value) {
		return
	}
	s.ticket(w, r, true, value)
}

// newAccessToken serves POST /v1.0/oauth2/accessToken with a JSON body {"appKey","appSecret"}.
func (s *Server) newAccessToken(w http.ResponseWriter, r *http.Request) {
	var body struct {
		AppKey    string `json:"appKey"`
		AppSecret string `json:"appSecret"`
	}
	parsed := readNewJSON(w, r, &body)
	c := call{endpoint: EndpointToken, key: body.AppKey}
	proceed, badExpiry := s.admit(w, r, c)
	if !proceed {
		return
	}
	if !parsed {
		// What the real gateway says to a form-encoded or missing body.
		writeNewError(w, http.StatusBadRequest, "Missingbody", "body is mandatory for this action.")
		return
	}
	now := s.now()
	value, ok := s.issueToken(w, c, body.AppSecret, false, now)
	if !ok {
		return
	}
	writeNewToken(w, value, seconds(s.tokenTTL, badExpiry))
}

// newJSAPITicket serves POST /v1.0/oauth2/jsapiTickets with the token in x-acs-dingtalk-access-token.
// A token in the query or in Authorization: Bearer is not looked at, as on the real API.
func (s *Server) newJSAPITicket(w http.ResponseWriter, r *http.Request) {
	s.ticket(w, r, false, r.Header.Get(AccessTokenHeader))
}

// ticket serves both ticket endpoints once the presented token value is known.
func (s *Server) ticket(w http.ResponseWriter, r *http.Request, legacy bool, value string) {
	s.mu.Lock()
	key, _ := s.ownerLocked(value, s.now())
	s.mu.Unlock()
	c := call{legacy: legacy, endpoint: EndpointTicket, key: key}
	proceed, badExpiry := s.admit(w, r, c)
	if !proceed {
		return
	}
	if value == "" {
		if legacy {
			writeLegacyError(w, 41001, "缺少access_token参数")
		} else {
			writeNewError(w, http.StatusBadRequest, "AuthenticationFailed.MissingParameter", "缺少参数："+AccessTokenHeader)
		}
		return
	}
	now := s.now()
	s.mu.Lock()
	key, state := s.ownerLocked(value, now)
	if state != tokenValid {
		s.mu.Unlock()
		if legacy && state == tokenExpired {
			writeLegacyError(w, 42001, "access_token超时")
			return
		}
		writeInvalidToken(w, legacy)
		return
	}
	t := s.fetchTicketLocked(key, s.apps[key], now)
	v := t.Value
	s.mu.Unlock()
	if legacy {
		writeLegacyTicket(w, v, seconds(s.ticketTTL, badExpiry))
		return
	}
	writeJSON(w, newContentType, http.StatusOK, struct {
		JSAPITicket string `json:"jsapiTicket"`
		ExpireIn    int64  `json:"expireIn"`
	}{v, seconds(s.ticketTTL, badExpiry)})
}

// readNewJSON reads a new-API JSON body into v and reports whether it parsed.
func readNewJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	return err == nil && mt == "application/json" && json.Unmarshal(raw, v) == nil
}

// writeNewToken answers a new-API token call: {"accessToken","expireIn"}.
func writeNewToken(w http.ResponseWriter, value string, expireIn int64) {
	writeJSON(w, newContentType, http.StatusOK, struct {
		AccessToken string `json:"accessToken"`
		ExpireIn    int64  `json:"expireIn"`
	}{value, expireIn})
}

// writeLegacyTicket answers GET /get_jsapi_ticket: {"errcode":0,"ticket","errmsg":"ok","expires_in"}.
func writeLegacyTicket(w http.ResponseWriter, value string, expiresIn int64) {
	writeJSON(w, legacyContentType, http.StatusOK, struct {
		Errcode   int    `json:"errcode"`
		Ticket    string `json:"ticket"`
		Errmsg    string `json:"errmsg"`
		ExpiresIn int64  `json:"expires_in"`
	}{0, value, "ok", expiresIn})
}

// seconds is what an answer says in expires_in/expireIn.
func seconds(ttl time.Duration, badExpiry bool) int64 {
	if badExpiry {
		return 0
	}
	return int64(ttl / time.Second)
}

func (s *Server) writeBadCredentials(w http.ResponseWriter, c call) {
	switch {
	case !c.legacy:
		writeNewError(w, http.StatusBadRequest, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
	case c.corp:
		writeLegacyError(w, 40089, "不合法的corpid或corpsecret")
	default:
		writeLegacyError(w, 40096, "不合法的appKey或appSecret")
	}
}

func writeInvalidToken(w http.ResponseWriter, legacy bool) {
	if legacy {
		writeLegacyError(w, 40014, "不合法的access_token")
		return
	}
	writeNewError(w, http.StatusBadRequest, "InvalidAuthentication", "不合法的access_token")
}

// writeFault answers as mode says, in c's family.
func (s *Server) writeFault(w http.ResponseWriter, c call, mode FaultMode) {
	type pair struct {
		legacyCode int
		legacyMsg  string
		status     int
		code, msg  string
	}
	var p pair
	switch mode {
	case FaultBadCredentials:
		if c.endpoint == EndpointTicket || c.endpoint == EndpointAPI {
			writeInvalidToken(w, c.legacy)
			return
		}
		s.writeBadCredentials(w, c)
		return
	case FaultIPNotAllowed:
		p = pair{60020, "访问ip不在白名单之中,请求ip:" + s.clientIP,
			http.StatusForbidden, "Forbidden.AccessDenied.IpNotInWhiteList", "访问ip不在白名单之中，request ip=" + s.clientIP + " appKey(" + c.key + ")"}
	case FaultQPSLimit:
		p = pair{90018, "当前应用调用该接口超过限流值，请降低调用频率",
			http.StatusForbidden, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "应用调用该接口超过限流值"}
	case FaultGlobalQPS:
		p = pair{90002, "该接口调用超过全局限流值",
			http.StatusForbidden, "Forbidden.AccessDenied.QpsLimitForApi", "该接口调用超过全局限流值"}
	case FaultBusy:
		p = pair{-1, "系统繁忙", http.StatusServiceUnavailable, "systemBusy", "系统繁忙"}
	case FaultServerError:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, "502 Bad Gateway\n")
		return
	case FaultBanHTML:
		writeBanHTML(w)
		return
	case FaultErrorPage:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, proxyErrorPage)
		return
	case FaultBanJSON:
		writeJSON(w, legacyContentType, http.StatusOK, map[string]any{
			"status": 1111, "punish": "deny", "url": "https://oapi.dingtalk.com/punish?reason=ip",
		})
		return
	default:
		writeNewError(w, http.StatusInternalServerError, "unknownError", "未知错误")
		return
	}
	if c.legacy {
		writeLegacyError(w, p.legacyCode, p.legacyMsg)
		return
	}
	writeNewError(w, p.status, p.code, p.msg)
}

const banPage = `<!DOCTYPE html>
<html lang="zh-CN">
<head><meta charset="utf-8"><title>访问被拒绝</title></head>
<body><h1>访问被拒绝</h1><p>您的访问频率过高，已被暂时限制 (FAKE DingTalk per-IP block).</p></body>
</html>
`

// proxyErrorPage is what an ordinary proxy in the path answers when DingTalk does not: not a ban,
// although its words and CSS would match a careless search for one.
const proxyErrorPage = `<!DOCTYPE html>
<html>
<head><title>502 Bad Gateway</title>
<style>h1{display:block;margin:0 auto} .denied,.forbidden{display:none}</style></head>
<body><h1>502 Bad Gateway</h1>
<p>The upstream server returned an invalid response. Nothing was blocked, forbidden or denied.</p>
<hr><center>nginx</center></body>
</html>
`

func writeBanHTML(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusForbidden)
	io.WriteString(w, banPage)
}

// writeLegacyError answers in the legacy envelope: HTTP 200 with a non-zero errcode.
func writeLegacyError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, legacyContentType, http.StatusOK, struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{code, msg})
}

// writeNewError answers in the new envelope: an HTTP error status with {"requestid","code","message"}.
func writeNewError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, newContentType, status, struct {
		RequestID string `json:"requestid"`
		Code      string `json:"code"`
		Message   string `json:"message"`
	}{requestID(), code, msg})
}

func writeJSON(w http.ResponseWriter, contentType string, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	w.Write(b)
}

// requestID returns an id shaped like DingTalk's (01A08FE7-68C3-7BBD-B223-447768EA4B29).
func requestID() string {
	var b [16]byte
	rand.Read(b[:])
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// issueToken checks the caller's credentials for c.key (an internal app, or a corp app when corp) and
// returns the app's current token, renewed or new; on wrong credentials it writes the family's error
// and returns false.
func (s *Server) issueToken(w http.ResponseWriter, c call, secret string, corp bool, now time.Time) (string, bool) {
	s.mu.Lock()
	a := s.apps[c.key]
	if a == nil || a.corp != corp || !secretOK(secret, a.secret) {
		s.mu.Unlock()
		s.writeBadCredentials(w, c)
		return "", false
	}
	value := s.fetchTokenLocked(c.key, a, now).Value
	s.mu.Unlock()
	return value, true
}
