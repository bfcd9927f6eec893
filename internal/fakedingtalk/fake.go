// Package fakedingtalk is a fake DingTalk for tests, benchmarks, `tokend -dev`, demos and chaos runs.
// One http.Handler serves both API families (their paths do not collide, so api_base and oapi_base
// may both point at it) with DingTalk's quirks: tokens that are returned again and renewed while
// valid, tickets that die 24 h after creation whatever expireIn says, HTTP 200 legacy errors, string
// error codes, per-IP bans. Faults can be injected per app and globally, every value ever issued is
// recorded, and a JSON control API under /_fake/ exposes all of it to other processes.
//
// It is a fake: no authentication on the control API, no persistence. Never expose it.
package fakedingtalk

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/tokend/tokend/internal/token"
)

// Defaults of Options.
const (
	DefaultTokenTTL     = 7200 * time.Second
	DefaultTicketTTL    = 7200 * time.Second
	DefaultTicketMaxAge = 24 * time.Hour
	DefaultClientIP     = "203.0.113.7"
)

// The automatic per-IP ban (Options.BanAfter): more than BanAfter calls from one IP within BanWindow
// gets that IP the HTML block page for BanDuration, measured with Options.Now.
const (
	BanWindow   = 20 * time.Second
	BanDuration = 5 * time.Minute
)

// Token and ticket values start with these prefixes, followed by 32 random hex digits.
const (
	TokenPrefix  = "fake-at-"
	TicketPrefix = "fake-jt-"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Now is the fake's clock for every expiry and for the ban window; default time.Now. Latency
	// and Hang faults use real time.
	Now func() time.Time
	// TokenTTL is an access token's lifetime, renewed by every fetch while valid; default 7200 s.
	TokenTTL time.Duration
	// TicketTTL is a jsapi ticket's lifetime, extended by every fetch while valid, and what every
	// ticket answer says in expireIn/expires_in; default 7200 s.
	TicketTTL time.Duration
	// TicketMaxAge is when a ticket dies after its creation, however often it was extended; default 24 h.
	TicketMaxAge time.Duration
	// ClientIP is the caller IP named in IP-allowlist errors; default 203.0.113.7.
	ClientIP string
	// Logger receives a line per call (debug) and per control change (info); default: discard. Logs
	// never contain secrets or token values (only token.Fingerprint).
	Logger *slog.Logger
	// BanAfter, when > 0, bans a client IP (by the request's RemoteAddr) that makes more than
	// BanAfter token/ticket calls within BanWindow: it gets the HTML block page for BanDuration.
	BanAfter int
}

// Counts are the calls the fake received for one key: every attempt, including those that failed,
// were faulted, banned or hung.
type Counts struct {
	Token  int `json:"token"`
	Ticket int `json:"ticket"`
	// API counts calls of the API endpoints (api.go) made with a token of the key.
	API int `json:"api"`
	// Aborted counts calls whose client gave up while a fault held them.
	Aborted int `json:"aborted"`
}

// Issued is one value the fake handed out.
type Issued struct {
	// App is the appKey or corp id the value belongs to.
	App   string     `json:"app"`
	Kind  token.Kind `json:"kind"`
	Value string     `json:"value"`
	// IssuedAt is when the value was created.
	IssuedAt time.Time `json:"issued_at"`
	// ExpiresAt is the value's real expiry at DingTalk now: renewals move it later. For a ticket it
	// never passes IssuedAt + TicketMaxAge.
	ExpiresAt time.Time `json:"expires_at"`
	// RevokedAt is when Revoke ended the value early; zero if it was not revoked.
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// validAt reports whether the value worked at DingTalk at time at.
func (i *Issued) validAt(at time.Time) bool {
	return !at.Before(i.IssuedAt) && at.Before(i.ExpiresAt) && (i.RevokedAt.IsZero() || at.Before(i.RevokedAt))
}

type app struct {
	secret string
	corp   bool
	token  *Issued // current access token, nil before the first fetch
	ticket *Issued // current jsapi ticket
}

type ipState struct {
	calls       []time.Time // within the last BanWindow
	bannedUntil time.Time
}

// Server is the fake DingTalk. All methods are safe for concurrent use, also while it serves.
type Server struct {
	now                         func() time.Time
	tokenTTL, ticketTTL, maxAge time.Duration
	clientIP                    string
	log                         *slog.Logger
	banAfter                    int
	mux                         *http.ServeMux
	closed                      chan struct{}
	closeOnce                   sync.Once

	mu      sync.Mutex
	apps    map[string]*app
	faults  map[string]Fault // "" = every app
	calls   map[string]*Counts
	total   int
	issued  []*Issued
	byValue map[string]*Issued
	ips     map[string]*ipState
	apiAt   []time.Time   // arrival of API endpoint calls, the last maxAPITimes
	changed chan struct{} // closed and replaced at every state change
	isv     isvState      // third-party suites, corps and the Stream gateway (isv.go, stream.go)
	flows   flowState     // user tokens, Stream tickets, robots (flows.go); its own lock
}

// New returns a Server with no apps and no faults.
func New(opts Options) *Server {
	s := &Server{
		now:       opts.Now,
		tokenTTL:  opts.TokenTTL,
		ticketTTL: opts.TicketTTL,
		maxAge:    opts.TicketMaxAge,
		clientIP:  opts.ClientIP,
		log:       opts.Logger,
		banAfter:  opts.BanAfter,
		closed:    make(chan struct{}),
		apps:      map[string]*app{},
		faults:    map[string]Fault{},
		calls:     map[string]*Counts{},
		byValue:   map[string]*Issued{},
		ips:       map[string]*ipState{},
		changed:   make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.tokenTTL <= 0 {
		s.tokenTTL = DefaultTokenTTL
	}
	if s.ticketTTL <= 0 {
		s.ticketTTL = DefaultTicketTTL
	}
	if s.maxAge <= 0 {
		s.maxAge = DefaultTicketMaxAge
	}
	if s.clientIP == "" {
		s.clientIP = DefaultClientIP
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mux = s.routes()
	return s
}

// ServeHTTP serves the DingTalk endpoints of both families and the /_fake/ control API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close releases every request held by a Hang fault or a Latency (their connections are dropped)
// and makes later ones fail at once. Call it before closing the http.Server or httptest.Server
// serving the fake, whose Close otherwise waits for held requests. The fake keeps answering other
// requests. Close is idempotent.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// AddApp registers (or updates the secret of) an internal app. Its current token and ticket, if
// any, stay valid: to model a secret reset, also Revoke them.
func (s *Server) AddApp(appKey, appSecret string) { s.add(appKey, appSecret, false) }

// AddCorp registers (or updates the secret of) an organization-authorized app, reachable only
// through GET /gettoken?corpid=&corpsecret=.
func (s *Server) AddCorp(corpID, corpSecret string) { s.add(corpID, corpSecret, true) }

func (s *Server) add(key, secret string, corp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.apps[key]
	if a == nil {
		a = &app{}
		s.apps[key] = a
	}
	a.secret, a.corp = secret, corp
	s.log.Info("fake dingtalk app registered", "app", key, "corp", corp)
	s.notifyLocked()
}

// Revoke ends the token or ticket value early, as a secret reset or an app being disabled would:
// calls authenticating with it fail with the family's invalid-token error, and the next fetch of
// the app's token (or ticket) returns a new value. It reports whether the value was known and not
// already revoked.
func (s *Server) Revoke(value string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.byValue[value]
	if i == nil || !i.RevokedAt.IsZero() {
		return false
	}
	i.RevokedAt = s.now()
	s.log.Info("fake dingtalk value revoked", "app", i.App, "kind", i.Kind, "fingerprint", token.Fingerprint(value))
	s.notifyLocked()
	return true
}

// SetFault injects f for the app or corp id key, or for every app when key is "". A per-key fault
// matching the endpoint takes precedence over the global one. A zero Fault removes the key's fault.
// For ticket calls the key is the app of the access token presented; calls that cannot be
// attributed to an app (unknown token, unparsable request) see only the global fault.
func (s *Server) SetFault(key string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.isZero() {
		delete(s.faults, key)
	} else {
		s.faults[key] = f
	}
	s.log.Info("fake dingtalk fault set", "app", key, "mode", f.Mode.String(), "latency", f.Latency, "endpoint", f.Endpoint)
}

// ClearFaults removes every fault, per-key and global. Requests already held by Hang stay held.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.faults)
	s.log.Info("fake dingtalk faults cleared")
}

// Calls returns the token and ticket calls attributed to key (an appKey or corp id, as the request
// named it, known or not). Calls("") counts those that could not be attributed to any key.
func (s *Server) Calls(key string) Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.calls[key]; c != nil {
		return *c
	}
	return Counts{}
}

// AllCalls returns Calls for every key that received a call.
func (s *Server) AllCalls() map[string]Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Counts, len(s.calls))
	for k, c := range s.calls {
		out[k] = *c
	}
	return out
}

// TotalCalls returns the number of token and ticket calls received, of every key (control API
// calls and unknown paths are not counted).
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Issued returns a copy of every value ever handed out, in issue order, with its current expiry.
func (s *Server) Issued() []Issued {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Issued, len(s.issued))
	for i, v := range s.issued {
		out[i] = *v
	}
	return out
}

// Valid reports whether value was a valid credential of kind at DingTalk at time at: issued by
// then, not yet expired (renewals included: a value is valid from IssuedAt until its latest
// expiry) and not revoked by then.
func (s *Server) Valid(kind token.Kind, value string, at time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.byValue[value]
	return i != nil && i.Kind == kind && i.validAt(at)
}

// Wait blocks until cond returns true or ctx ends, re-evaluating cond (without any lock held, so it
// may call the Server's methods) after every call received, value issued, revoked or app added.
// It returns ctx.Err() if ctx ends first.
func (s *Server) Wait(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitCalls blocks until TotalCalls() ≥ n or ctx ends. A call is counted when it arrives, before any
// fault's latency or hang, so WaitCalls also tells that a request is being held.
func (s *Server) WaitCalls(ctx context.Context, n int) error {
	return s.Wait(ctx, func() bool { return s.TotalCalls() >= n })
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// newValue returns prefix + 32 random hex digits.
func newValue(prefix string) string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return prefix + hex.EncodeToString(b[:])
}

// secretOK compares secrets in constant time.
func secretOK(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// fetchTokenLocked returns app key's current token, renewing it, or a new one.
func (s *Server) fetchTokenLocked(key string, a *app, now time.Time) *Issued {
	if t := a.token; t != nil && t.validAt(now) {
		if exp := now.Add(s.tokenTTL); exp.After(t.ExpiresAt) {
			t.ExpiresAt = exp
		}
		return t
	}
	t := &Issued{App: key, Kind: token.AccessToken, Value: newValue(TokenPrefix), IssuedAt: now, ExpiresAt: now.Add(s.tokenTTL)}
	a.token = t
	s.recordLocked(t)
	return t
}

// fetchTicketLocked returns app key's current ticket, extended but never past its maximum age, or
// a new one.
func (s *Server) fetchTicketLocked(key string, a *app, now time.Time) *Issued {
	if t := a.ticket; t != nil && t.validAt(now) {
		s.renewTicket(t.IssuedAt, &t.ExpiresAt, now)
		return t
	}
	exp := now.Add(min(s.ticketTTL, s.maxAge))
	t := &Issued{App: key, Kind: token.JSAPITicket, Value: newValue(TicketPrefix), IssuedAt: now, ExpiresAt: exp}
	a.ticket = t
	s.recordLocked(t)
	return t
}

// renewTicket applies a fetch at now to a valid jsapi ticket issued at issuedAt: its expiry moves to
// ticketTTL from now, never backwards and never past issuedAt + maxAge (a ticket's hard 24 h).
func (s *Server) renewTicket(issuedAt time.Time, expiresAt *time.Time, now time.Time) {
	exp := now.Add(s.ticketTTL)
	if death := issuedAt.Add(s.maxAge); exp.After(death) {
		exp = death
	}
	if exp.After(*expiresAt) {
		*expiresAt = exp
	}
}

func (s *Server) recordLocked(i *Issued) {
	s.issued = append(s.issued, i)
	s.byValue[i.Value] = i
	s.log.Debug("fake dingtalk issued", "app", i.App, "kind", i.Kind, "fingerprint", token.Fingerprint(i.Value))
	s.notifyLocked()
}

// tokenState is what an access token presented to a ticket endpoint turns out to be.
type tokenState int

const (
	tokenUnknown tokenState = iota
	tokenExpired
	tokenRevoked
	tokenValid
)

// ownerLocked returns the app a presented access token belongs to ("" if unknown) and its state.
func (s *Server) ownerLocked(value string, now time.Time) (string, tokenState) {
	i := s.byValue[value]
	if v := s.isv.byValue[value]; i == nil && value != "" && v != nil && v.Kind == token.AccessToken && v.Corp != "" {
		// A third-party app's corp token calls the corp's APIs; a rotated or relieved one is dead.
		if v.validAt(now) {
			return v.Suite, tokenValid
		}
		if !v.EndedAt.IsZero() {
			return v.Suite, tokenRevoked
		}
		return v.Suite, tokenExpired
	}
	switch {
	case value == "" || i == nil || i.Kind != token.AccessToken:
		return "", tokenUnknown
	case !i.RevokedAt.IsZero() && !now.Before(i.RevokedAt):
		return i.App, tokenRevoked
	case !i.validAt(now):
		return i.App, tokenExpired
	}
	return i.App, tokenValid
}
