package fakedingtalk

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// The flows beyond app tokens, with DingTalk's rules:
//
//	POST /v1.0/oauth2/userAccessToken   {"clientId","clientSecret","code"|"refreshToken","grantType"}
//	                                    → {"accessToken","refreshToken","expireIn","corpId"}; codes
//	                                    (minted by the control API, living CodeTTL) and refresh tokens
//	                                    are single-use: a used, expired or unknown one is HTTP 400
//	                                    (code "invalidAuthCode" / "invalidRefreshToken": DingTalk's
//	                                    exact names are unconfirmed; clients must accept any 4xx)
//	POST /v1.0/gateway/connections/open {"clientId","clientSecret","subscriptions",…} → {"endpoint","ticket"}
//	                                    for an internal app: a ticket of the fake's gateway (stream.go)
//	POST /robot/send?access_token=…[&timestamp=…&sign=…]  a JSON message; HTTP 200 with errcode 0, or
//	                                    300001 (unknown token), 400013 (robot disabled), 310000 (bad or
//	                                    missing signature, timestamp more than 1 h off), 410100 (more than
//	                                    RobotLimit messages within RobotWindow: blocked RobotBlock)
//
// Control routes:
//
//	POST /_fake/user_codes {"app","corp_id"} → {"code"}
//	POST /_fake/robots     {"token","secret","disabled"} → 204
//	GET  /_fake/flows      → FlowCounts
const (
	CodeTTL     = 5 * time.Minute
	RobotLimit  = 20
	RobotWindow = time.Minute
	RobotBlock  = 10 * time.Minute
	// RobotSkew is how far a signed message's timestamp may be from the fake's clock.
	RobotSkew = time.Hour
)

// Value prefixes of the flows.
const (
	UserCodePrefix     = "fake-code-"
	UserTokenPrefix    = "fake-uat-"
	UserRefreshPrefix  = "fake-urt-"
	StreamTicketPrefix = "fake-st-"
)

// FlowCounts are the calls of the flows the fake received.
type FlowCounts struct {
	UserToken int `json:"user_token"`
	// UserTokenIssued counts successful exchanges.
	UserTokenIssued int `json:"user_token_issued"`
	Stream          int `json:"stream"`
	RobotSend       int `json:"robot_send"`
	// RobotDelivered counts messages accepted (errcode 0), RobotBlocked the 410100 answers.
	RobotDelivered int `json:"robot_delivered"`
	RobotBlocked   int `json:"robot_blocked"`
}

type userGrant struct {
	app, corp string
	expires   time.Time
}

type fakeRobot struct {
	secret       string
	disabled     bool
	sent         []time.Time // within the last RobotWindow
	blockedUntil time.Time
}

// flowState is the fake's state for the flows; its zero value is ready.
type flowState struct {
	mu      sync.Mutex
	codes   map[string]userGrant
	refresh map[string]userGrant
	robots  map[string]*fakeRobot
	counts  FlowCounts
}

func (s *Server) flowRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1.0/oauth2/userAccessToken", s.userAccessToken)
	mux.HandleFunc("POST /robot/send", s.robotSend)
	mux.HandleFunc("POST /_fake/user_codes", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			App    string `json:"app"`
			CorpID string `json:"corp_id"`
		}
		if !decode(w, r, &b) {
			return
		}
		writeJSON(w, "application/json", http.StatusOK, map[string]string{"code": s.MintCode(b.App, b.CorpID)})
	})
	mux.HandleFunc("POST /_fake/robots", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			Token    string `json:"token"`
			Secret   string `json:"secret"`
			Disabled bool   `json:"disabled"`
		}
		if !decode(w, r, &b) {
			return
		}
		if b.Token == "" {
			ctlError(w, "token is required")
			return
		}
		s.AddRobot(b.Token, b.Secret)
		s.SetRobotDisabled(b.Token, b.Disabled)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /_fake/flows", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, "application/json", http.StatusOK, s.FlowCalls())
	})
}

// MintCode returns a new single-use login code for the app appKey, as DingTalk's login would hand a
// user's browser; the user belongs to corpID. It lives CodeTTL.
func (s *Server) MintCode(appKey, corpID string) string {
	code := newValue(UserCodePrefix)
	f := &s.flows
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.codes == nil {
		f.codes = map[string]userGrant{}
	}
	f.codes[code] = userGrant{app: appKey, corp: corpID, expires: s.now().Add(CodeTTL)}
	return code
}

// AddRobot registers (or updates the secret of) a robot webhook token; secret "" means the robot
// does not sign.
func (s *Server) AddRobot(token, secret string) {
	f := &s.flows
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.robots == nil {
		f.robots = map[string]*fakeRobot{}
	}
	if r := f.robots[token]; r != nil {
		r.secret = secret
		return
	}
	f.robots[token] = &fakeRobot{secret: secret}
}

// SetRobotDisabled disables (400013) or re-enables a robot.
func (s *Server) SetRobotDisabled(token string, disabled bool) {
	f := &s.flows
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.robots[token]; r != nil {
		r.disabled = disabled
	}
}

// FlowCalls returns the flows' call counters.
func (s *Server) FlowCalls() FlowCounts {
	f := &s.flows
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// appSecretOK reports whether key names an internal app whose secret is secret.
func (s *Server) appSecretOK(key, secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[key]
	return a != nil && !a.corp && secretOK(secret, a.secret)
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil || json.Unmarshal(raw, v) != nil {
		writeNewError(w, http.StatusBadRequest, "Missingbody", "body is mandatory for this action.")
		return false
	}
	return true
}

func (s *Server) userAccessToken(w http.ResponseWriter, r *http.Request) {
	f := &s.flows
	f.mu.Lock()
	f.counts.UserToken++
	f.mu.Unlock()
	s.touch()
	var b struct {
		ClientID     string `json:"clientId"`
		ClientSecret string `json:"clientSecret"`
		Code         string `json:"code"`
		RefreshToken string `json:"refreshToken"`
		GrantType    string `json:"grantType"`
	}
	if !readJSON(w, r, &b) {
		return
	}
	if !s.appSecretOK(b.ClientID, b.ClientSecret) {
		writeNewError(w, http.StatusBadRequest, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
		return
	}
	now := s.now()
	f.mu.Lock()
	var g userGrant
	var ok bool
	switch b.GrantType {
	case "authorization_code":
		g, ok = f.codes[b.Code]
		delete(f.codes, b.Code)
		if !ok || g.app != b.ClientID || !now.Before(g.expires) {
			f.mu.Unlock()
			writeNewError(w, http.StatusBadRequest, "invalidAuthCode", "不合法的临时授权码")
			return
		}
	case "refresh_token":
		g, ok = f.refresh[b.RefreshToken]
		delete(f.refresh, b.RefreshToken)
		if !ok || g.app != b.ClientID || !now.Before(g.expires) {
			f.mu.Unlock()
			writeNewError(w, http.StatusBadRequest, "invalidRefreshToken", "不合法的refresh_token")
			return
		}
	default:
		f.mu.Unlock()
		writeNewError(w, http.StatusBadRequest, "invalidParameter", "grantType")
		return
	}
	rt := newValue(UserRefreshPrefix)
	if f.refresh == nil {
		f.refresh = map[string]userGrant{}
	}
	f.refresh[rt] = userGrant{app: g.app, corp: g.corp, expires: now.Add(30 * 24 * time.Hour)}
	f.counts.UserTokenIssued++
	f.mu.Unlock()
	writeJSON(w, newContentType, http.StatusOK, struct {
		AccessToken  string `json:"accessToken"`
		RefreshToken string `json:"refreshToken"`
		ExpireIn     int64  `json:"expireIn"`
		CorpID       string `json:"corpId"`
	}{newValue(UserTokenPrefix), rt, 7200, g.corp})
}

// isInternalApp reports whether key is the appKey of an internal app.
func (s *Server) isInternalApp(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[key]
	return a != nil && !a.corp
}

// openAppStream answers a Stream connection open for an internal app: a ticket for the fake's own
// gateway (stream.go), where the connection then behaves as a suite's does.
func (s *Server) openAppStream(w http.ResponseWriter, r *http.Request, req streamOpenRequest) {
	f := &s.flows
	f.mu.Lock()
	f.counts.Stream++
	f.mu.Unlock()
	s.touch()
	if !s.appSecretOK(req.ClientID, req.ClientSecret) {
		writeNewError(w, http.StatusBadRequest, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
		return
	}
	events, ok := req.events(w)
	if !ok {
		return
	}
	ticket := newValue(StreamTicketPrefix)
	s.mu.Lock()
	s.openStreamLocked(req.ClientID, ticket, events, s.now())
	s.mu.Unlock()
	writeStreamOpened(w, r, ticket)
}

func (s *Server) robotSend(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	now := s.now()
	f := &s.flows
	f.mu.Lock()
	defer s.touch()
	defer f.mu.Unlock()
	f.counts.RobotSend++
	rb := f.robots[q.Get("access_token")]
	if rb == nil {
		writeLegacyError(w, 300001, "token is not exist")
		return
	}
	if rb.disabled {
		writeLegacyError(w, 400013, "群已被解散或机器人已被禁用")
		return
	}
	if rb.secret != "" {
		ts, err := strconv.ParseInt(q.Get("timestamp"), 10, 64)
		skew := now.Sub(time.UnixMilli(ts))
		if err != nil || skew > RobotSkew || skew < -RobotSkew {
			writeLegacyError(w, 310000, "sign not match, more: [timestamp is more than 1 hour]")
			return
		}
		mac := hmac.New(sha256.New, []byte(rb.secret))
		mac.Write([]byte(q.Get("timestamp") + "\n" + rb.secret))
		want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(q.Get("sign")), []byte(want)) {
			writeLegacyError(w, 310000, "sign not match")
			return
		}
	}
	if now.Before(rb.blockedUntil) {
		f.counts.RobotBlocked++
		writeLegacyError(w, 410100, "send too fast, exceed 20 times per minute")
		return
	}
	keep := rb.sent[:0]
	for _, t := range rb.sent {
		if now.Sub(t) < RobotWindow {
			keep = append(keep, t)
		}
	}
	rb.sent = keep
	if len(rb.sent) >= RobotLimit {
		rb.blockedUntil = now.Add(RobotBlock)
		rb.sent = nil
		f.counts.RobotBlocked++
		writeLegacyError(w, 410100, "send too fast, exceed 20 times per minute")
		return
	}
	var msg struct {
		MsgType string `json:"msgtype"`
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil || json.Unmarshal(raw, &msg) != nil || msg.MsgType == "" {
		writeLegacyError(w, 40035, "缺少参数 json")
		return
	}
	rb.sent = append(rb.sent, now)
	f.counts.RobotDelivered++
	writeJSON(w, legacyContentType, http.StatusOK, map[string]any{"errcode": 0, "errmsg": "ok"})
}

// touch wakes Wait after a flow call.
func (s *Server) touch() {
	s.mu.Lock()
	s.notifyLocked()
	s.mu.Unlock()
}
