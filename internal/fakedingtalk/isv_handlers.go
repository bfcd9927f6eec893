package fakedingtalk

import (
	"net/http"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// DingTalk's third-party (ISV) endpoints over the model of isv.go: admission (counts, the per-IP ban,
// faults), the suite and corp token calls and the corp jsapi ticket.

// isvAdmit counts an ISV call, applies the per-IP ban and the first matching fault of corp, suite
// or every app. Like admit, it returns proceed false when it already answered.
func (s *Server) isvAdmit(w http.ResponseWriter, r *http.Request, suiteKey, corp, endpoint string) (proceed, badExpiry bool) {
	now := s.now()
	s.mu.Lock()
	s.isv.init()
	k := isvKey{suiteKey, corp}
	cnt := s.isv.calls[k]
	if cnt == nil {
		cnt = &ISVCounts{}
		s.isv.calls[k] = cnt
	}
	switch endpoint {
	case EndpointToken:
		cnt.Token++
	case EndpointTicket:
		cnt.Ticket++
	case EndpointStream:
		cnt.Stream++
	}
	s.total++
	banned := s.banLocked(remoteIP(r), now)
	f, faulted := Fault{}, false
	if corp != "" {
		if cf, ok := s.faults[corp]; ok && cf.matches(endpoint) {
			f, faulted = cf, true
		}
	}
	if !faulted {
		f, faulted = s.faultLocked(suiteKey, endpoint)
	}
	s.notifyLocked()
	s.mu.Unlock()

	s.log.Debug("fake dingtalk isv call", "suite", suiteKey, "corp", corp, "endpoint", endpoint, "banned", banned, "fault", f.Mode.String())
	if banned {
		writeBanHTML(w)
		return false, false
	}
	if !faulted {
		return true, false
	}
	return s.suffer(w, r, call{legacy: endpoint == EndpointTicket, endpoint: endpoint, key: suiteKey}, f)
}

// suiteCall is the body of a suite or corp token call.
type suiteCall struct {
	SuiteKey    string `json:"suiteKey"`
	SuiteSecret string `json:"suiteSecret"`
	AuthCorpID  string `json:"authCorpId"` // corp token calls only
	SuiteTicket string `json:"suiteTicket"`
}

// readSuiteCall reads and admits a suite token call or, with corp, a corp token call (the corp's
// faults apply, and authCorpId is required). ok is false when it already answered; badExpiry is
// admit's.
func (s *Server) readSuiteCall(w http.ResponseWriter, r *http.Request, corp bool) (body suiteCall, badExpiry, ok bool) {
	parsed := readNewJSON(w, r, &body)
	if !corp {
		body.AuthCorpID = "" // not a member of a suite token call
	}
	proceed, badExpiry := s.isvAdmit(w, r, body.SuiteKey, body.AuthCorpID, EndpointToken)
	if !proceed {
		return suiteCall{}, false, false
	}
	if !parsed || (corp && body.AuthCorpID == "") {
		writeNewError(w, http.StatusBadRequest, "Missingbody", "body is mandatory for this action.")
		return suiteCall{}, false, false
	}
	return body, badExpiry, true
}

// suiteAccessToken serves POST /v1.0/oauth2/suiteAccessToken {"suiteKey","suiteSecret","suiteTicket"}.
func (s *Server) suiteAccessToken(w http.ResponseWriter, r *http.Request) {
	s.serveSuiteCall(w, r, false, func(body suiteCall, su *suiteState, now time.Time) (string, bool) {
		t := su.token
		if t != nil && t.validAt(now) {
			if exp := now.Add(s.tokenTTL); exp.After(t.ExpiresAt) {
				t.ExpiresAt = exp
			}
		} else {
			t = &ISVIssued{Suite: body.SuiteKey, Kind: KindSuiteToken, Value: newValue(SuiteTokenPrefix), IssuedAt: now, ExpiresAt: now.Add(s.tokenTTL)}
			su.token = t
			s.recordISVLocked(t)
		}
		return t.Value, true
	})
}

// serveSuiteCall serves a suite token call or, with corp, a corp token call: it reads and admits the
// call (readSuiteCall), checks the suite's credentials and ticket, and answers with the token issue
// returns. issue runs under s.mu; when it returns ok false it has written the error.
func (s *Server) serveSuiteCall(w http.ResponseWriter, r *http.Request, corp bool, issue func(body suiteCall, su *suiteState, now time.Time) (value string, ok bool)) {
	body, badExpiry, ok := s.readSuiteCall(w, r, corp)
	if !ok {
		return
	}
	now := s.now()
	s.mu.Lock()
	su := s.suiteLocked(body.SuiteKey)
	if !s.suiteCallOK(w, su, body.SuiteSecret, body.SuiteTicket, now) {
		s.mu.Unlock()
		return
	}
	v, ok := issue(body, su, now)
	s.mu.Unlock()
	if ok {
		writeNewToken(w, v, seconds(s.tokenTTL, badExpiry))
	}
}

// suiteCallOK checks a suite's credentials and ticket, writing the error when they fail. s.mu is held
// (writing the small error body under it is harmless in a fake).
func (s *Server) suiteCallOK(w http.ResponseWriter, su *suiteState, secret, ticket string, now time.Time) bool {
	switch {
	case su == nil || !secretOK(secret, su.secret):
		writeNewError(w, http.StatusBadRequest, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
		return false
	case !su.ticketOK(ticket, now):
		writeNewError(w, http.StatusBadRequest, CodeInvalidSuiteTicket, "853005 签名中套件ticket参数无效")
		return false
	}
	return true
}

// corpAccessToken serves POST /v1.0/oauth2/corpAccessToken
// {"suiteKey","suiteSecret","authCorpId","suiteTicket"}: a new token on every call; the previous one
// dies at once.
func (s *Server) corpAccessToken(w http.ResponseWriter, r *http.Request) {
	s.serveSuiteCall(w, r, true, func(body suiteCall, su *suiteState, now time.Time) (string, bool) {
		c := su.corps[body.AuthCorpID]
		if c == nil || !c.authorized {
			writeNewError(w, http.StatusBadRequest, CodeInvalidAuthCorpID, "企业未授权该应用")
			return "", false
		}
		c.token.end(now, EndRotated)
		t := &ISVIssued{Suite: body.SuiteKey, Corp: body.AuthCorpID, Kind: token.AccessToken, Value: newValue(CorpTokenPrefix), IssuedAt: now, ExpiresAt: now.Add(s.tokenTTL)}
		c.token = t
		s.recordISVLocked(t)
		return t.Value, true
	})
}

// isvJSAPITicket serves GET /get_jsapi_ticket when the presented token is an ISV corp token, and
// reports whether it was one (otherwise the internal-app handler goes on).
func (s *Server) isvJSAPITicket(w http.ResponseWriter, r *http.Request, value string) bool {
	s.mu.Lock()
	s.isv.init()
	i := s.isv.byValue[value]
	s.mu.Unlock()
	if value == "" || i == nil || i.Kind != token.AccessToken {
		return false
	}
	proceed, badExpiry := s.isvAdmit(w, r, i.Suite, i.Corp, EndpointTicket)
	if !proceed {
		return true
	}
	now := s.now()
	s.mu.Lock()
	if !i.validAt(now) {
		expired := i.EndedAt.IsZero()
		s.mu.Unlock()
		if expired {
			writeLegacyError(w, 42001, "access_token超时")
		} else {
			writeInvalidToken(w, true)
		}
		return true
	}
	c := s.isv.suites[i.Suite].corps[i.Corp]
	t := c.ticket
	if t != nil && t.validAt(now) {
		s.renewTicket(t.IssuedAt, &t.ExpiresAt, now)
	} else {
		t = &ISVIssued{Suite: i.Suite, Corp: i.Corp, Kind: token.JSAPITicket, Value: newValue(TicketPrefix), IssuedAt: now, ExpiresAt: now.Add(min(s.ticketTTL, s.maxAge))}
		c.ticket = t
		s.recordISVLocked(t)
	}
	v := t.Value
	s.mu.Unlock()
	writeLegacyTicket(w, v, seconds(s.ticketTTL, badExpiry))
	return true
}
