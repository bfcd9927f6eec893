package fakedingtalk

import (
	"errors"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// The third-party (ISV) model. A suite (suite key + secret) receives suite tickets that the fake
// "pushes" (MintSuiteTicket): a token call must present the newest ticket, or the previous one
// within SuiteTicketGrace after the newer was minted; a custom suite (CustomKey/CustomSecret)
// accepts any ticket. Corps authorize and relieve a suite. The suite token is renewed while valid,
// like an internal app's; a corp token is NEW ON EVERY FETCH and the previous one dies at once (the
// strict reading of an unconfirmed fact). Corp jsapi tickets come from the legacy GET
// /get_jsapi_ticket with a corp token. Every value is recorded (ISVIssued) and every call counted
// per (suite, corp) (ISVCalls); calls also count in TotalCalls, go through the per-IP ban, and
// honour faults set for the corp id, then the suite key, then globally.
//
// Errors, in the new API's envelope: wrong suite key or secret → 400 invalidClientIdOrSecret; a
// ticket that is not (or no longer) accepted → 400 InvalidSuiteTicket with DingTalk's legacy code
// and text in the message ("853005 签名中套件ticket参数无效"; the new API's own code for it is not
// documented, so the fake chooses this shape); a corp that has not authorized the suite (never, or
// relieved) → 400 InvalidAuthCorpId.

// Value prefixes of the ISV model, followed by 32 random hex digits. Corp jsapi tickets use
// TicketPrefix.
const (
	SuiteTokenPrefix  = "fake-st-"
	CorpTokenPrefix   = "fake-ct-"
	SuiteTicketPrefix = "fake-stk-"
)

// KindSuiteToken is the kind of a suite access token in ISVIssued (corp tokens are
// token.AccessToken, corp jsapi tickets token.JSAPITicket).
const KindSuiteToken token.Kind = "suite_access_token"

// SuiteTicketGrace is how long the previous suite ticket is still accepted after a newer one was
// minted, by Options.Now.
const SuiteTicketGrace = time.Minute

// New-API error codes of the ISV endpoints.
const (
	CodeInvalidSuiteTicket = "InvalidSuiteTicket"
	CodeInvalidAuthCorpID  = "InvalidAuthCorpId"
	// LegacyInvalidSuiteTicket is DingTalk's legacy errcode for an invalid suite ticket, quoted in
	// the message of CodeInvalidSuiteTicket.
	LegacyInvalidSuiteTicket = 853005
)

// EndpointStream is the fault endpoint of POST /v1.0/gateway/connections/open. Faults cannot name
// it (Fault's JSON accepts only token and ticket), so only a fault for every endpoint applies there.
const EndpointStream = "stream"

// End reasons of an ISVIssued value.
const (
	EndRotated  = "rotated"  // a newer fetch of the corp's token
	EndRelieved = "relieved" // the corp withdrew its authorization
	EndRevoked  = "revoked"  // RevokeISV
)

// ISVIssued is one value the ISV model handed out.
type ISVIssued struct {
	Suite string `json:"suite"`
	// Corp is the authorized corp of a corp token or ticket; "" for the suite token.
	Corp  string     `json:"corp,omitempty"`
	Kind  token.Kind `json:"kind"`
	Value string     `json:"value"`
	// IssuedAt is when the value was created.
	IssuedAt time.Time `json:"issued_at"`
	// ExpiresAt is its expiry at DingTalk now (renewals of the suite token and of tickets move it).
	ExpiresAt time.Time `json:"expires_at"`
	// EndedAt is when it stopped working before ExpiresAt, and EndReason why; zero if it did not.
	EndedAt   time.Time `json:"ended_at,omitzero"`
	EndReason string    `json:"end_reason,omitempty"`
}

func (i *ISVIssued) validAt(at time.Time) bool {
	return !at.Before(i.IssuedAt) && at.Before(i.ExpiresAt) && (i.EndedAt.IsZero() || at.Before(i.EndedAt))
}

func (i *ISVIssued) end(at time.Time, reason string) {
	if i != nil && i.EndedAt.IsZero() && at.Before(i.ExpiresAt) {
		i.EndedAt, i.EndReason = at, reason
	}
}

// ISVCounts are the calls the fake received for one (suite, corp): every attempt, failed,
// faulted, banned or hung included.
type ISVCounts struct {
	Token  int `json:"token"`
	Ticket int `json:"ticket"`
	Stream int `json:"stream"`
}

type isvKey struct{ suite, corp string }

type suiteState struct {
	secret     string
	custom     bool
	ticket     string    // newest minted suite ticket
	prevTicket string    // accepted until prevUntil
	prevUntil  time.Time //
	token      *ISVIssued
	corps      map[string]*corpState
	callback   *pushTarget
}

type corpState struct {
	authorized bool
	token      *ISVIssued
	ticket     *ISVIssued
}

// isvState is the ISV model's part of the Server, guarded by Server.mu. Maps are made on first use.
type isvState struct {
	suites  map[string]*suiteState
	issued  []*ISVIssued
	byValue map[string]*ISVIssued
	calls   map[isvKey]*ISVCounts
	gw      gateway
}

func (st *isvState) init() {
	if st.suites == nil {
		st.suites = map[string]*suiteState{}
		st.byValue = map[string]*ISVIssued{}
		st.calls = map[isvKey]*ISVCounts{}
	}
}

// ErrUnknownSuite is returned by the ISV methods for a suite key never added.
var ErrUnknownSuite = errors.New("unknown suite")

// AddSuite registers (or updates the secret and custom flag of) a suite. A custom suite accepts any
// suite ticket. Its tickets, tokens and corps are kept on update.
func (s *Server) AddSuite(suiteKey, suiteSecret string, custom bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isv.init()
	su := s.isv.suites[suiteKey]
	if su == nil {
		su = &suiteState{corps: map[string]*corpState{}}
		s.isv.suites[suiteKey] = su
	}
	su.secret, su.custom = suiteSecret, custom
	s.log.Info("fake dingtalk suite registered", "suite", suiteKey, "custom", custom)
	s.notifyLocked()
}

// MintSuiteTicket makes a new suite ticket for the suite, as DingTalk does before pushing it, and
// returns it with its push time (Options.Now). The previous ticket stays accepted for
// SuiteTicketGrace. It does not deliver the ticket anywhere: see PushEvent and PublishStream.
func (s *Server) MintSuiteTicket(suiteKey string) (string, time.Time, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	su := s.suiteLocked(suiteKey)
	if su == nil {
		return "", time.Time{}, ErrUnknownSuite
	}
	v := s.mintLocked(su, now)
	s.log.Info("fake dingtalk suite ticket minted", "suite", suiteKey, "fingerprint", token.Fingerprint(v))
	return v, now, nil
}

func (s *Server) mintLocked(su *suiteState, now time.Time) string {
	su.prevTicket, su.prevUntil = su.ticket, now.Add(SuiteTicketGrace)
	su.ticket = newValue(SuiteTicketPrefix)
	s.notifyLocked()
	return su.ticket
}

func (s *Server) suiteLocked(suiteKey string) *suiteState {
	s.isv.init()
	return s.isv.suites[suiteKey]
}

// AuthorizeCorp records that corp authorized the suite (again). It does not push tmp_auth_code: see
// PushEvent and PublishStream.
func (s *Server) AuthorizeCorp(suiteKey, corp string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	su := s.suiteLocked(suiteKey)
	if su == nil {
		return ErrUnknownSuite
	}
	c := su.corps[corp]
	if c == nil {
		c = &corpState{}
		su.corps[corp] = c
	}
	c.authorized = true
	s.log.Info("fake dingtalk corp authorized", "suite", suiteKey, "corp", corp)
	s.notifyLocked()
	return nil
}

// RelieveCorp records that corp withdrew its authorization: its token and ticket stop working at
// once and token calls for it get InvalidAuthCorpId until it authorizes again.
func (s *Server) RelieveCorp(suiteKey, corp string) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	su := s.suiteLocked(suiteKey)
	if su == nil {
		return ErrUnknownSuite
	}
	if c := su.corps[corp]; c != nil {
		c.authorized = false
		c.token.end(now, EndRelieved)
		c.ticket.end(now, EndRelieved)
		c.token, c.ticket = nil, nil
	}
	s.log.Info("fake dingtalk corp relieved", "suite", suiteKey, "corp", corp)
	s.notifyLocked()
	return nil
}

// RevokeISV ends an ISV value early, as a suite secret reset would. It reports whether the value
// was known and still working.
func (s *Server) RevokeISV(value string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isv.init()
	i := s.isv.byValue[value]
	if i == nil || !i.validAt(now) {
		return false
	}
	i.end(now, EndRevoked)
	s.notifyLocked()
	return true
}

// ISVIssued returns a copy of every ISV value ever handed out, in issue order.
func (s *Server) ISVIssued() []ISVIssued {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ISVIssued, len(s.isv.issued))
	for i, v := range s.isv.issued {
		out[i] = *v
	}
	return out
}

// ISVValid reports whether value was a working ISV value of kind at time at: issued by then, not
// expired, not ended by a newer fetch, a relief or a revocation.
func (s *Server) ISVValid(kind token.Kind, value string, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.isv.init()
	i := s.isv.byValue[value]
	return i != nil && i.Kind == kind && i.validAt(at)
}

// ISVCalls returns the calls counted for (suite, corp); corp "" counts the suite token calls and
// Stream connection opens.
func (s *Server) ISVCalls(suiteKey, corp string) ISVCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.isv.calls[isvKey{suiteKey, corp}]; c != nil {
		return *c
	}
	return ISVCounts{}
}

// allISVCalls returns the counts by suite, then corp ("" for the suite's own calls).
func (s *Server) allISVCalls() map[string]map[string]ISVCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]ISVCounts{}
	for k, c := range s.isv.calls {
		if out[k.suite] == nil {
			out[k.suite] = map[string]ISVCounts{}
		}
		out[k.suite][k.corp] = *c
	}
	return out
}

func (s *Server) recordISVLocked(i *ISVIssued) {
	s.isv.issued = append(s.isv.issued, i)
	s.isv.byValue[i.Value] = i
	s.log.Debug("fake dingtalk issued", "suite", i.Suite, "corp", i.Corp, "kind", i.Kind, "fingerprint", token.Fingerprint(i.Value))
	s.notifyLocked()
}

// ticketOKLocked reports whether ticket is accepted for su at now.
func (su *suiteState) ticketOK(ticket string, now time.Time) bool {
	switch {
	case su.custom:
		return true
	case ticket == "":
		return false
	case secretOK(ticket, su.ticket):
		return true
	default:
		return su.prevTicket != "" && now.Before(su.prevUntil) && secretOK(ticket, su.prevTicket)
	}
}
