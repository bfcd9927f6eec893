// Package grant exchanges users' login codes and refresh tokens for user access tokens, so that the
// app secret the exchange needs stays in tokend.
//
// Codes and refresh tokens are single-use at DingTalk: a retried or duplicated presentation must not
// burn them. The same value presented again within Hold (5 minutes), on any replica, gets the same
// answer with no second DingTalk call, and concurrent presentations share one call: singleflight in
// the process; across replicas a short store lock elects the caller, whose result is kept as a note
// that the others (and later presentations) replay. Successes and refusals of the grant are replayed;
// failures of DingTalk are not. The note is named by an HMAC of the value and sealed with AES-GCM,
// both keyed from the app secret, so a reader of the store learns no user's token, code or refresh
// token, and cannot even confirm a guess of one.
package grant

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/flowerr"
)

// DefaultHold is how long a result is replayed: an authCode lives 5 minutes.
const DefaultHold = 5 * time.Minute

// Store is the state the replicas share. store.Memory and store.Redis implement it.
type Store interface {
	TryLockName(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
	UnlockName(ctx context.Context, name, owner string) error
	GetNote(ctx context.Context, name string) (value string, ttl time.Duration, ok bool, err error)
	SetNote(ctx context.Context, name, value string, ttl time.Duration) error
}

// Gate is the shared egress budget and IP-ban pause every Part 2 call to DingTalk obeys.
type Gate = flowerr.Gate

// Upstream exchanges a grant at DingTalk. *dingtalk.Client implements it.
type Upstream interface {
	UserAccessToken(ctx context.Context, app dingtalk.App, g dingtalk.UserGrant) (dingtalk.UserToken, error)
}

// App is one app that can exchange user grants: Cred.Key and Cred.Secret are its client id and secret.
type App struct {
	Name string
	Cred dingtalk.App
	// Supported is false for an app type without a client id (organization-authorized apps).
	Supported bool
}

// Options configures an Exchanger. Store, Gate and Upstream are required.
type Options struct {
	Store    Store
	Gate     Gate
	Upstream Upstream
	Apps     []App
	// Timeout bounds one DingTalk call; the cross-replica lock lapses a few seconds after it.
	// Default 10s.
	Timeout time.Duration
	// Hold is how long results are replayed. Default DefaultHold.
	Hold time.Duration
	// Poll is how often a replica waiting for another's result looks at the store. Default 100ms.
	Poll time.Duration
	// StoreTimeout bounds one store operation. Default 1s.
	StoreTimeout time.Duration
	// Now is the clock for expiries. Default time.Now.
	Now func() time.Time
	// Logger receives store failures. Default: discard.
	Logger *slog.Logger
	// Registerer receives tokend_user_tokens_total. Default: none.
	Registerer prometheus.Registerer
}

// Result is a user access token. Its values are secrets.
type Result struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	ExpiresAt    time.Time `json:"expires_at"`
	CorpID       string    `json:"corp_id"`
}

// Results of tokend_user_tokens_total.
const (
	ResultOK           = "ok"
	ResultReplayed     = "replayed"
	ResultInvalidGrant = "invalid_grant"
	ResultRejected     = "rejected"
	ResultUnavailable  = "unavailable"
	ResultEgress       = "egress_refused"
)

// Exchanger exchanges grants. It is safe for concurrent use; SetApps may run while it exchanges.
type Exchanger struct {
	store    Store
	gate     Gate
	up       Upstream
	timeout  time.Duration
	hold     time.Duration
	poll     time.Duration
	storeTO  time.Duration
	now      func() time.Time
	log      *slog.Logger
	owner    string
	flight   singleflight.Group
	exchange *prometheus.CounterVec

	apps atomic.Pointer[map[string]*appKeys]

	// local holds this replica's own results too, so that a retry is still answered without
	// DingTalk while the store is unreachable.
	mu    sync.Mutex
	local map[string]localHeld
}

// maxLocal bounds the results held in memory; logins arrive at human rates, far below it.
const maxLocal = 10000

// appKeys is an app with the keys derived from its secret.
type appKeys struct {
	App
	idKey []byte      // HMAC key naming notes
	aead  cipher.AEAD // seals notes
}

// New returns an Exchanger.
func New(opts Options) (*Exchanger, error) {
	if opts.Store == nil || opts.Gate == nil || opts.Upstream == nil {
		return nil, errors.New("grant: store, gate and upstream are required")
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	x := &Exchanger{store: opts.Store, gate: opts.Gate, up: opts.Upstream, timeout: opts.Timeout, hold: opts.Hold,
		poll: opts.Poll, storeTO: opts.StoreTimeout, now: opts.Now, log: opts.Logger, owner: hex.EncodeToString(id[:]),
		local: map[string]localHeld{}}
	if x.timeout <= 0 {
		x.timeout = 10 * time.Second
	}
	if x.hold <= 0 {
		x.hold = DefaultHold
	}
	if x.poll <= 0 {
		x.poll = 100 * time.Millisecond
	}
	if x.storeTO <= 0 {
		x.storeTO = time.Second
	}
	if x.now == nil {
		x.now = time.Now
	}
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	x.exchange = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokend_user_tokens_total",
		Help: "User-token exchanges by app and result: ok, replayed, invalid_grant, rejected, unavailable, egress_refused.",
	}, []string{"app", "result"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(x.exchange); err != nil {
			return nil, fmt.Errorf("grant: register metrics: %w", err)
		}
	}
	if err := x.SetApps(opts.Apps); err != nil {
		return nil, err
	}
	return x, nil
}

// SetApps replaces the apps (on reload). Exchanges in progress finish with the old ones.
func (x *Exchanger) SetApps(apps []App) error {
	m := make(map[string]*appKeys, len(apps))
	for _, a := range apps {
		k := &appKeys{App: a}
		if a.Supported {
			var err error
			if k.idKey, err = hkdf.Key(sha256.New, []byte(a.Cred.Secret), nil, "tokend user_token id v1", 32); err != nil {
				return fmt.Errorf("grant: derive key: %w", err)
			}
			sealKey, err := hkdf.Key(sha256.New, []byte(a.Cred.Secret), nil, "tokend user_token seal v1", 32)
			if err != nil {
				return fmt.Errorf("grant: derive key: %w", err)
			}
			block, err := aes.NewCipher(sealKey)
			if err != nil {
				return fmt.Errorf("grant: cipher: %w", err)
			}
			if k.aead, err = cipher.NewGCM(block); err != nil {
				return fmt.Errorf("grant: cipher: %w", err)
			}
		}
		m[a.Name] = k
	}
	x.apps.Store(&m)
	return nil
}

// outcome is one exchange's answer, shared by every caller of a flight.
type outcome struct {
	held     held
	replayed bool
}

// Exchange exchanges g (exactly one of its Code and RefreshToken set) for the app called app.
// Errors: flowerr.ErrUnknown, flowerr.ErrUnsupported, *flowerr.BadRequestError, *flowerr.InvalidGrantError
// (DingTalk refused the grant), *flowerr.RejectedError (DingTalk refused the app), *flowerr.UnavailableError,
// the Gate's errors as it returned them, and ctx's error. replayed reports that the answer is one
// already given for this value.
func (x *Exchanger) Exchange(ctx context.Context, app string, g dingtalk.UserGrant) (res Result, replayed bool, err error) {
	a, ok := (*x.apps.Load())[app]
	switch {
	case !ok:
		return Result{}, false, flowerr.ErrUnknown
	case !a.Supported:
		return Result{}, false, flowerr.ErrUnsupported
	case (g.Code == "") == (g.RefreshToken == ""):
		return Result{}, false, &flowerr.BadRequestError{Msg: "exactly one of code and refresh_token is required"}
	}
	o, err := x.shared(ctx, a, g)
	result := ResultOK
	switch {
	case err != nil:
		result = resultOf(err)
	case o.held.Refused != "":
		result = ResultInvalidGrant
	case o.replayed:
		result = ResultReplayed
	}
	x.exchange.WithLabelValues(app, result).Inc()
	if err != nil {
		return Result{}, false, err
	}
	if o.held.Refused != "" {
		return Result{}, o.replayed, &flowerr.InvalidGrantError{UpstreamCode: o.held.Refused}
	}
	return *o.held.Result, o.replayed, nil
}

func resultOf(err error) string {
	var (
		rej *flowerr.RejectedError
		un  *flowerr.UnavailableError
	)
	switch {
	case errors.As(err, &rej):
		return ResultRejected
	case errors.As(err, &un), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return ResultUnavailable
	default:
		return ResultEgress
	}
}

// noteName names the held result of g: an HMAC of the value under a key only tokend knows.
func (a *appKeys) noteName(g dingtalk.UserGrant) string {
	mac := hmac.New(sha256.New, a.idKey)
	if g.Code != "" {
		mac.Write([]byte("code\x00" + g.Code))
	} else {
		mac.Write([]byte("refresh\x00" + g.RefreshToken))
	}
	return "grant:" + a.Name + ":" + hex.EncodeToString(mac.Sum(nil)[:16])
}

// shared runs one exchange per value in this process; each caller waits on its own context while the
// exchange runs on a context of its own, so a caller that gives up does not cancel it for the others.
func (x *Exchanger) shared(ctx context.Context, a *appKeys, g dingtalk.UserGrant) (outcome, error) {
	name := a.noteName(g)
	ch := x.flight.DoChan(name, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.lockTTL()+x.timeout)
		defer cancel()
		return x.coordinate(fctx, a, name, g)
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return outcome{}, r.Err
		}
		return r.Val.(outcome), nil
	case <-ctx.Done():
		return outcome{}, ctx.Err()
	}
}

// lockTTL is how long the cross-replica lock lasts: the call plus some slack; it lapses if its holder dies.
func (x *Exchanger) lockTTL() time.Duration { return x.timeout + 5*time.Second }

// coordinate replays a held result, or takes the lock and makes the call, or waits for the replica
// that holds the lock. Without the store, this replica calls on its own.
func (x *Exchanger) coordinate(ctx context.Context, a *appKeys, name string, g dingtalk.UserGrant) (outcome, error) {
	tick := time.NewTicker(x.poll)
	defer tick.Stop()
	for {
		if h, ok := x.read(ctx, a, name); ok {
			return outcome{held: h, replayed: true}, nil
		}
		sctx, cancel := context.WithTimeout(ctx, x.storeTO)
		locked, err := x.store.TryLockName(sctx, name, x.owner, x.lockTTL())
		cancel()
		if err != nil {
			x.log.Warn("user token: store unavailable; exchanging without cross-replica dedupe", "app", a.Name, "err", err)
			h, err := x.call(ctx, a, g)
			if err == nil {
				x.writeLocal(name, h)
			}
			return outcome{held: h}, err
		}
		if locked {
			return x.locked(ctx, a, name, g)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return outcome{}, &flowerr.UnavailableError{RetryAfter: time.Second, Reason: "another replica's exchange of this value did not finish in time"}
		}
	}
}

// locked makes the call under the lock: after a last look at the store, since the previous holder
// may have written its result just before letting go.
func (x *Exchanger) locked(ctx context.Context, a *appKeys, name string, g dingtalk.UserGrant) (outcome, error) {
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), x.storeTO)
		defer cancel()
		_ = x.store.UnlockName(sctx, name, x.owner)
	}()
	if h, ok := x.read(ctx, a, name); ok {
		return outcome{held: h, replayed: true}, nil
	}
	h, err := x.call(ctx, a, g)
	if err != nil {
		return outcome{}, err
	}
	x.write(ctx, a, name, h)
	return outcome{held: h}, nil
}

// call makes the DingTalk call. A refusal of the grant is an answer (h.Refused), not an error.
func (x *Exchanger) call(ctx context.Context, a *appKeys, g dingtalk.UserGrant) (held, error) {
	var (
		t       dingtalk.UserToken
		refused string
	)
	gated, err := flowerr.Call(ctx, x.gate, x.timeout, func(ctx context.Context) (err error) {
		t, err = x.up.UserAccessToken(ctx, a.Cred, g)
		return err
	}, func(de *dingtalk.Error) error {
		refused = de.Code
		return &flowerr.InvalidGrantError{UpstreamCode: de.Code}
	})
	switch {
	case gated:
		return held{}, fmt.Errorf("user token %s: %w", a.Name, err)
	case refused != "":
		return held{Refused: refused}, nil
	case err != nil:
		return held{}, err
	}
	return held{Result: &Result{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken,
		ExpiresAt: x.now().Add(t.ExpiresIn).UTC().Truncate(time.Second), CorpID: t.CorpID}}, nil
}
