// Package httpapi serves tokend's two HTTP surfaces: the authenticated client API (tokens, tickets,
// invalidation, dd.config signatures) and the unauthenticated ops API (health, readiness, metrics).
// It asks the broker for credentials and knows nothing of the store or of DingTalk.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/signature"
	"github.com/tokend/tokend/internal/token"
)

// Broker is what the API needs from the broker. *broker.Broker implements it.
type Broker interface {
	Token(ctx context.Context, k token.Key) (token.Token, error)
	Invalidate(ctx context.Context, app, value string) (token.Token, error)
	Status() []broker.AppStatus
	Ready() bool
	StoreUp() bool
}

// App is what the API shows and signs for one app.
type App struct {
	Name          string
	Type          string
	JSAPITicket   bool
	CorpID        string
	AgentID       string
	SignatureHash signature.Hash
	// ISV marks a third-party app: its access token is the suite token, JSAPITicket is per corp, and
	// it serves the corp routes (isv.go).
	ISV bool

	docs *docCache // the app's served documents (SetConfig gives each app its own)
}

// Client is one API client: the SHA-256 of its key and/or the names of its TLS client certificate,
// the apps it may use ("*" for all), and its request rate limit.
type Client struct {
	Name      string
	KeySHA256 [32]byte // zero: the client has no bearer key
	CertNames []string // subject CN, DNS or URI SANs of a verified client certificate
	Apps      []string
	// SuiteTickets are the third-party apps whose suite tickets the client may hand in ("*": all).
	SuiteTickets []string
	// RPS and Burst limit the client's requests on this replica; RPS 0 means no limit.
	RPS   float64
	Burst int
	// Proxy holds, by app, the DingTalk calls the client may make through the proxy.
	Proxy map[string]proxyrule.Set
}

// Options configures an API. Broker is required.
type Options struct {
	Broker Broker
	// ISV serves the third-party routes (isv.go); nil answers them as for an unknown app.
	ISV     ISV
	Apps    []App
	Clients []Client
	// Now is the clock for expires_in and signature timestamps. Default time.Now.
	Now func() time.Time
	// Logger receives request failures worth an operator's attention. Default: discard.
	Logger *slog.Logger
	// Registerer receives the HTTP metrics; Gatherer is what /metrics serves. Both default to none
	// (then /metrics serves an empty registry).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Audit, if set, receives security-relevant events (see Event).
	Audit func(Event)
	// Pprof serves net/http/pprof under /debug/pprof/ on the ops API (config debug.pprof).
	Pprof bool
	// Proxy, if set, serves the proxy routes and the gateway listener; ProxyAudit receives one
	// event per proxied call.
	Proxy      Forwarder
	ProxyAudit func(ProxyEvent)
}

// Event is a security-relevant happening on the client API, for the audit log. It never holds a key
// or a token, only a token's fingerprint.
type Event struct {
	Type        string // auth_failure, forbidden, invalidate, user_token, stream_ticket, robot_send, suite_ticket
	Client      string
	App         string
	Corp        string // a third-party app's corp, "" otherwise
	Robot       string
	Fingerprint string
	Result      string
	Remote      string
}

// API holds the state both handlers share. Apps and clients can be replaced while serving.
type API struct {
	broker Broker
	isv    ISV
	now    func() time.Time
	log    *slog.Logger
	audit  func(Event)
	m      *httpMetrics
	gather prometheus.Gatherer
	pprof  bool
	fwd    Forwarder
	paudit func(ProxyEvent)

	// hdr holds the hot path's header values, allocated once: net/http copies a handler's header
	// map before writing it (Header.Clone), and never changes a value slice in place, so one slice
	// serves every response. Nothing may write into them.
	hdr struct{ noStore, json []string }
	// writers pools chain's status-recording writers.
	writers sync.Pool

	cfg   atomic.Pointer[surface]
	flows atomic.Pointer[flowSurface] // user tokens, Stream tickets, robots (flows.go)
}

// surface is the replaceable part of the configuration, swapped whole on reload.
type surface struct {
	apps   map[string]*App
	order  []*App
	byKey  map[[32]byte]*client // by the SHA-256 of the client's key
	byCert map[string]*client
}

type client struct {
	name    string
	all     bool
	apps    map[string]bool
	tickets map[string]bool // suite_tickets; "*" for all
	limiter *limiter        // nil: no limit
	proxy   map[string]proxyrule.Set
}

// New builds an API.
func New(opts Options) (*API, error) {
	if opts.Broker == nil {
		return nil, errors.New("httpapi: broker is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Audit == nil {
		opts.Audit = func(Event) {}
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.NewRegistry()
	}
	m, err := newHTTPMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	if opts.ProxyAudit == nil {
		opts.ProxyAudit = func(ProxyEvent) {}
	}
	a := &API{broker: opts.Broker, isv: opts.ISV, now: opts.Now, log: opts.Logger, audit: opts.Audit, m: m, gather: opts.Gatherer, pprof: opts.Pprof,
		fwd: opts.Proxy, paudit: opts.ProxyAudit}
	// Capacity 1: an append (Header.Add) copies rather than writing into the shared array.
	a.hdr.noStore = []string{"no-store"}[:1:1]
	a.hdr.json = []string{"application/json"}[:1:1]
	a.writers.New = func() any { return new(statusWriter) }
	a.SetConfig(opts.Apps, opts.Clients)
	return a, nil
}

// SetConfig replaces the apps and clients; requests already past authentication finish with the old ones.
func (a *API) SetConfig(apps []App, clients []Client) {
	s := &surface{apps: make(map[string]*App, len(apps)), byKey: map[[32]byte]*client{}, byCert: map[string]*client{}}
	for i := range apps {
		app := apps[i]
		if app.SignatureHash == "" {
			app.SignatureHash = signature.SHA1
		}
		app.docs = new(docCache)
		s.apps[app.Name] = &app
		s.order = append(s.order, &app)
	}
	for _, c := range clients {
		cl := &client{name: c.Name, apps: map[string]bool{}, tickets: map[string]bool{}, proxy: c.Proxy}
		for _, name := range c.SuiteTickets {
			cl.tickets[name] = true
		}
		if c.RPS > 0 {
			cl.limiter = newLimiter(c.RPS, c.Burst, a.now)
		}
		if c.KeySHA256 != ([32]byte{}) {
			s.byKey[c.KeySHA256] = cl
		}
		for _, n := range c.CertNames {
			s.byCert[n] = cl
		}
		for _, name := range c.Apps {
			if name == "*" {
				cl.all = true
			}
			cl.apps[name] = true
		}
	}
	a.cfg.Store(s)
}

// authenticate finds the client whose key hashes to the presented key's SHA-256, in one map lookup
// whatever the number of clients.
//
// This is as safe against timing attacks as comparing every hash in constant time was. The lookup's
// time may depend on the presented key's digest and on how much of it matches a stored digest, but
// the attacker cannot steer a digest without finding SHA-256 preimages: learning that a digest of
// theirs shares leading bytes with a configured one brings them no closer to a key that hashes to it
// (the configured digests are not secrets either: they sit in the config file). Nothing about the
// key itself is compared; it is only hashed, in time that depends on its length alone.
func (s *surface) authenticate(key string) *client {
	if key == "" {
		return nil
	}
	// Hash a copy on the stack: []byte(key) would cost a heap allocation per request (keys from
	// tokend keygen are 47 bytes; a longer one spills to the heap, which is only slower).
	var buf [64]byte
	return s.byKey[sha256.Sum256(append(buf[:0], key...))]
}

// fromCert finds the client a verified TLS client certificate names: its subject common name, or one
// of its DNS or URI SANs. Unverified certificates identify nobody.
func (s *surface) fromCert(cs *tls.ConnectionState) *client {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil
	}
	leaf := cs.VerifiedChains[0][0]
	names := append([]string{leaf.Subject.CommonName}, leaf.DNSNames...)
	for _, u := range leaf.URIs {
		names = append(names, u.String())
	}
	for _, n := range names {
		if c, ok := s.byCert[n]; ok && n != "" {
			return c
		}
	}
	return nil
}

// may reports whether c may use app. A client limited to a list gets 403 for any other name, whether
// or not the app exists, so it cannot probe which apps are configured.
func (c *client) may(app string) bool { return c.all || c.apps[app] }
