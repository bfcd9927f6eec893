// Package broker keeps every configured app's DingTalk credentials valid and hands them out.
//
// Each credential (an app's access token or jsapi ticket) has an entry whose current value lives in
// memory behind an atomic pointer, so a request for a valid token touches neither the store nor
// DingTalk. A single scheduler goroutine refreshes entries as they come due, a bounded pool of workers
// does the refreshing, and a refresh shares one in-process flight with every concurrent need of the
// same key. Across replicas a store lock elects one fetcher while the others wait for its write; the
// write itself is fenced by the store (generation and never-backwards expiry), so the lock is only an
// efficiency device.
package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/token"
)

// App is one configured app as the broker sees it.
type App struct {
	Name string
	// Cred is what DingTalk needs to issue the app's access token. Cred.API also selects the ticket API.
	Cred dingtalk.App
	// JSAPITicket says whether the app keeps a jsapi ticket too.
	JSAPITicket bool
}

// Options configures a Broker. Store, Upstream and Apps are required; zero durations take the defaults
// of the contract.
type Options struct {
	Store    Store
	Upstream Upstream
	Apps     []App
	// Margin: refresh when less than this is left (capped at half the token's lifetime). Default 10m.
	Margin time.Duration
	// UpstreamTimeout bounds one DingTalk call; the refresh lock lapses a few seconds after it. Default 10s.
	UpstreamTimeout time.Duration
	// FailureRetry is how often an app whose credentials or IP DingTalk rejects is tried again. Default 30s.
	FailureRetry time.Duration
	// MaxRPS is the budget of calls to DingTalk per second, shared by all replicas through the store
	// (each replica also keeps to it alone, which matters while the store is down). Default 50.
	MaxRPS float64
	// EgressRPS is the budget of every other call to DingTalk per second (proxy.max_rps): proxied
	// calls, user tokens, Stream tickets, robot sends, shared by all replicas through the store (see
	// Egress). Default 300.
	EgressRPS int
	// Workers is how many refreshes may run at once in this replica. Default 8.
	Workers int
	// StoreTimeout bounds one store operation. Default 1s.
	StoreTimeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives refresh outcomes and store transitions. Default: discard.
	Logger *slog.Logger
	// Registerer receives the broker's metrics. Default: none registered.
	Registerer prometheus.Registerer
	// OnRefresh, if set, learns the outcome of every call this replica made to DingTalk for a
	// credential (for the audit log). It must not block.
	OnRefresh func(RefreshEvent)
}

// RefreshEvent is the outcome of one refresh that called DingTalk. It holds a fingerprint of the
// value, never the value.
type RefreshEvent struct {
	Key token.Key
	// Result is "success" or "failure".
	Result string
	// UpstreamCode is DingTalk's code on failure.
	UpstreamCode string
	// Fingerprint identifies the value obtained (token.Fingerprint); Changed says whether it differs
	// from the value served before.
	Fingerprint string
	Changed     bool
	// Invalidation says whether a client's report caused the refresh.
	Invalidation bool
}

// Broker keeps the credentials of a set of apps valid. Its methods are safe for concurrent use. Run
// must be running for refreshes to happen in the background; Token and Invalidate work without it.
type Broker struct {
	sh        *shared // the store and what the replicas share through it
	upstream  Upstream
	now       func() time.Time
	log       *slog.Logger
	m         *metrics
	onRefresh func(RefreshEvent)

	margin    time.Duration
	upTimeout time.Duration
	lockTTL   time.Duration
	failRetry time.Duration

	entries atomic.Pointer[map[token.Key]*entry]
	apps    atomic.Pointer[[]App]

	flights   singleflight.Group
	sched     *scheduler
	budget    *rate.Limiter // this replica's own pacing of token and ticket calls
	egress    *rate.Limiter // the egress budget while the store is down
	egressRPS int
	workers   int
	maxRPS    float64

	// life bounds every refresh; it ends when Run returns. Once stopped is set (under lifeMu), no new
	// refresh starts, so Run can wait for inflight to drain.
	life     context.Context
	stop     context.CancelFunc
	lifeMu   sync.RWMutex
	stopped  bool
	inflight sync.WaitGroup

	warm     atomic.Bool
	draining atomic.Bool
	banUntil atomic.Int64 // unix ms until which DingTalk bans this egress IP, as last seen
}

// New builds a Broker for opts.Apps. It does not contact the store or DingTalk.
func New(opts Options) (*Broker, error) {
	if opts.Store == nil || opts.Upstream == nil {
		return nil, errors.New("broker: store and upstream are required")
	}
	if opts.Margin <= 0 {
		opts.Margin = 10 * time.Minute
	}
	if opts.UpstreamTimeout <= 0 {
		opts.UpstreamTimeout = 10 * time.Second
	}
	if opts.FailureRetry <= 0 {
		opts.FailureRetry = 30 * time.Second
	}
	if opts.MaxRPS <= 0 {
		opts.MaxRPS = 50
	}
	if opts.EgressRPS <= 0 {
		opts.EgressRPS = 300
	}
	if opts.Workers <= 0 {
		opts.Workers = 8
	}
	if opts.StoreTimeout <= 0 {
		opts.StoreTimeout = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnRefresh == nil {
		opts.OnRefresh = func(RefreshEvent) {}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	life, stop := context.WithCancel(context.Background())
	b := &Broker{
		upstream:  opts.Upstream,
		now:       opts.Now,
		log:       opts.Logger,
		m:         m,
		onRefresh: opts.OnRefresh,
		margin:    opts.Margin,
		upTimeout: opts.UpstreamTimeout,
		lockTTL:   opts.UpstreamTimeout + 5*time.Second,
		failRetry: opts.FailureRetry,
		workers:   opts.Workers,
		maxRPS:    opts.MaxRPS,
		egressRPS: opts.EgressRPS,
		life:      life,
		stop:      stop,
	}
	b.budget = newBucket(opts.MaxRPS)
	b.egress = newBucket(float64(opts.EgressRPS))
	b.sched = newScheduler(opts.Now)
	b.sh = newShared(opts.Store, opts.StoreTimeout, opts.Logger, m)
	b.setApps(opts.Apps, nil)
	return b, nil
}

// setApps installs apps, keeping the entries (and tokens) of keys that stay. It returns the entries
// that are new.
func (b *Broker) setApps(apps []App, old map[token.Key]*entry) []*entry {
	next := make(map[token.Key]*entry, 2*len(apps))
	var added []*entry
	for _, a := range apps {
		keys := []token.Key{{App: a.Name, Kind: token.AccessToken}}
		if a.JSAPITicket {
			keys = append(keys, token.Key{App: a.Name, Kind: token.JSAPITicket})
		}
		for _, k := range keys {
			if e, ok := old[k]; ok {
				e.setApp(a)
				next[k] = e
				continue
			}
			e := newEntry(k, a)
			next[k] = e
			added = append(added, e)
		}
	}
	appsCopy := append([]App(nil), apps...)
	b.apps.Store(&appsCopy)
	b.entries.Store(&next)
	return added
}

// Apps returns the configured apps in configuration order.
func (b *Broker) Apps() []App { return *b.apps.Load() }

func (b *Broker) entry(k token.Key) (*entry, error) {
	if e, ok := (*b.entries.Load())[k]; ok {
		return e, nil
	}
	if k.Kind == token.JSAPITicket {
		if _, ok := (*b.entries.Load())[token.Key{App: k.App, Kind: token.AccessToken}]; ok {
			return nil, ErrTicketDisabled
		}
	}
	return nil, ErrUnknownApp
}

// Token returns a valid credential for k. A value valid in memory is returned at once; otherwise the
// caller waits (bounded by ctx) for the one refresh in flight. Errors: ErrUnknownApp,
// ErrTicketDisabled, *RejectedError, *UnavailableError, or ctx's error.
func (b *Broker) Token(ctx context.Context, k token.Key) (token.Token, error) {
	e, err := b.entry(k)
	if err != nil {
		return token.Token{}, err
	}
	if r := e.cur.Load(); r != nil && r.Valid(b.now()) {
		return r.Token, nil
	}
	return b.await(ctx, e, nil)
}

// refreshDue does what the scheduler does when k comes due: it refreshes k if its value is missing,
// expired or inside the refresh window (sharing the flight with any concurrent need), and returns the
// value served afterwards. Errors are those of Token. Tests call it (export_test.go).
func (b *Broker) refreshDue(ctx context.Context, k token.Key) (token.Token, error) {
	e, err := b.entry(k)
	if err != nil {
		return token.Token{}, err
	}
	return b.await(ctx, e, nil)
}

// await waits for a refresh of e (shared with every concurrent caller) and returns its result. An
// invalidation that joined a flight started for another reason (a scheduled refresh, a client
// without a valid token) and got the reported value back runs one flight of its own afterwards, so
// the reported value is checked with DingTalk without a second concurrent call from this process.
func (b *Broker) await(ctx context.Context, e *entry, inv *invalidation) (token.Token, error) {
	for joined := false; ; joined = true {
		if err := e.blocked(b.now()); err != nil {
			return token.Token{}, err
		}
		var res singleflight.Result
		select {
		case res = <-b.flight(e, inv):
		case <-ctx.Done():
			return token.Token{}, ctx.Err()
		}
		if res.Err != nil {
			return token.Token{}, res.Err
		}
		out := res.Val.(outcome)
		if inv != nil && !joined && out.checked != inv.value && out.rec.Value == inv.value {
			continue
		}
		if !out.rec.Valid(b.now()) {
			// Never a success without a valid value, whatever path the refresh took.
			return token.Token{}, &UnavailableError{RetryAfter: time.Second}
		}
		return out.rec.Token, nil
	}
}

// outcome is what a flight hands its callers: the record served afterwards, and the reported value
// it was started to check ("" for a plain refresh).
type outcome struct {
	rec     token.Record
	checked string
}

// flight starts (or joins) the one refresh of e in this process: one flight per credential, whatever
// started it, so that this process never makes two concurrent DingTalk calls for one credential, with
// or without the store's lock. The refresh runs on the broker's own context, detached from the
// callers, so a caller that gives up does not cancel it for the others.
func (b *Broker) flight(e *entry, inv *invalidation) <-chan singleflight.Result {
	return b.flights.DoChan(e.key.String(), func() (any, error) {
		b.lifeMu.RLock()
		if b.stopped {
			b.lifeMu.RUnlock()
			return outcome{}, &UnavailableError{RetryAfter: time.Second}
		}
		b.inflight.Add(1)
		b.lifeMu.RUnlock()
		defer b.inflight.Done()
		ctx, cancel := context.WithTimeout(b.life, 2*b.lockTTL+b.upTimeout)
		defer cancel()
		rec, err := b.refresh(ctx, e, inv)
		b.reschedule(e)
		out := outcome{rec: rec}
		if inv != nil {
			out.checked = inv.value
		}
		return out, err
	})
}

// Ready reports whether the start-up warm-up has tried every credential once and the broker is not
// shutting down.
func (b *Broker) Ready() bool { return b.warm.Load() && !b.draining.Load() }

// Drain marks the broker as shutting down: Ready turns false so load balancers stop sending work.
func (b *Broker) Drain() { b.draining.Store(true) }

// StoreUp reports whether the store answered the last time it was asked.
func (b *Broker) StoreUp() bool { return b.sh.isUp() }
