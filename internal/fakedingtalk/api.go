package fakedingtalk

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxAPITimes bounds the arrival times kept for APICallTimes.
const maxAPITimes = 200_000

// The API endpoints: a few real DingTalk APIs that authenticate with an access token, as services
// call them (through tokend's proxy). They validate the token like the ticket endpoints do (unknown,
// expired and revoked tokens get the family's invalid-token answer), count as EndpointAPI calls of
// the token's app, and obey the ban and the faults.
//
//	POST /topapi/v2/user/get?access_token=   {"userid"}  legacy, /topapi: errcode 88 + sub_code
//	GET  /user/get?access_token=&userid=                  legacy: errcode 40014 / 42001
//	GET  /v1.0/contact/users/{id}  x-acs-dingtalk-access-token   new: 400 InvalidAuthentication
//	POST /media/upload?access_token=&type=   any body     legacy; answers the body's size and SHA-256
func (s *Server) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /topapi/v2/user/get", s.topapiUserGet)
	mux.HandleFunc("GET /user/get", s.legacyUserGet)
	mux.HandleFunc("GET /v1.0/contact/users/{id}", s.newContactUser)
	mux.HandleFunc("POST /media/upload", s.mediaUpload)
	// Control: GET /_fake/api_times → {"times":[RFC 3339 nano, ...]}, APICallTimes.
	mux.HandleFunc("GET /_fake/api_times", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, map[string]any{"times": s.APICallTimes()})
	})
}

// APICallTimes returns when the API endpoint calls arrived (by Options.Now), oldest first: the most
// recent ones, at least the last 100 000.
func (s *Server) APICallTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.apiAt...)
}

func (s *Server) aborted(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.calls[key]; c != nil {
		c.Aborted++
	}
	s.notifyLocked()
}

// authorize admits an API call made with value and checks the token; it returns false when it
// already answered. topapi selects the /topapi wrapper (errcode 88 with the cause in sub_code).
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, legacy, topapi bool, value string) bool {
	s.mu.Lock()
	key, _ := s.ownerLocked(value, s.now())
	s.mu.Unlock()
	if proceed, _ := s.admit(w, r, call{legacy: legacy, endpoint: EndpointAPI, key: key}); !proceed {
		return false
	}
	s.mu.Lock()
	_, state := s.ownerLocked(value, s.now())
	s.mu.Unlock()
	if state == tokenValid {
		return true
	}
	switch {
	case !legacy && value == "":
		writeNewError(w, http.StatusBadRequest, "AuthenticationFailed.MissingParameter", "缺少参数："+AccessTokenHeader)
	case !legacy:
		writeInvalidToken(w, false)
	case topapi:
		sub, msg := "40014", "不合法的access_token"
		if state == tokenExpired {
			sub, msg = "42001", "access_token超时"
		}
		writeJSON(w, legacyContentType, http.StatusOK, map[string]any{
			"errcode": 88, "errmsg": "ding talk error[subcode=" + sub + ",submsg=" + msg + "]",
			"sub_code": sub, "sub_msg": msg, "request_id": requestID(),
		})
	case value == "":
		writeLegacyError(w, 41001, "缺少access_token参数")
	case state == tokenExpired:
		writeLegacyError(w, 42001, "access_token超时")
	default:
		writeInvalidToken(w, true)
	}
	return false
}

func (s *Server) topapiUserGet(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r, true, true, r.URL.Query().Get("access_token")) {
		return
	}
	var body struct {
		UserID string `json:"userid"`
	}
	raw, _ := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if json.Unmarshal(raw, &body) != nil || body.UserID == "" {
		writeJSON(w, legacyContentType, http.StatusOK, map[string]any{
			"errcode": 88, "errmsg": "ding talk error[subcode=isv.invalid-parameter:userid]", "sub_code": "40035",
			"sub_msg": "缺少参数 userid", "request_id": requestID(),
		})
		return
	}
	writeJSON(w, legacyContentType, http.StatusOK, map[string]any{
		"errcode": 0, "errmsg": "ok", "request_id": requestID(),
		"result": map[string]any{"userid": body.UserID, "name": "Fake User " + body.UserID, "active": true},
	})
}

func (s *Server) legacyUserGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !s.authorize(w, r, true, false, q.Get("access_token")) {
		return
	}
	writeJSON(w, legacyContentType, http.StatusOK, map[string]any{
		"errcode": 0, "errmsg": "ok", "userid": q.Get("userid"), "name": "Fake User " + q.Get("userid"),
	})
}

func (s *Server) newContactUser(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r, false, false, r.Header.Get(AccessTokenHeader)) {
		return
	}
	id := r.PathValue("id")
	writeJSON(w, newContentType, http.StatusOK, map[string]any{"unionId": id, "nick": "Fake User " + id, "stateCode": "86"})
}

// mediaUpload streams the body into a hash: any size, no memory held.
func (s *Server) mediaUpload(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r, true, false, r.URL.Query().Get("access_token")) {
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		writeLegacyError(w, -1, "upload interrupted")
		return
	}
	sum := hex.EncodeToString(h.Sum(nil))
	typ := r.URL.Query().Get("type")
	if typ == "" {
		typ = "file"
	}
	writeJSON(w, legacyContentType, http.StatusOK, map[string]any{
		"errcode": 0, "errmsg": "ok", "type": strings.ToLower(typ), "media_id": "@fake" + sum[:24],
		"created_at": s.now().UnixMilli(), "size": n, "sha256": sum,
	})
}
