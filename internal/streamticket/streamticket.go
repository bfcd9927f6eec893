// Package streamticket obtains DingTalk Stream connection tickets for services, so that the app
// secret opening a Stream connection needs stays in tokend. (Package stream is tokend's own Stream
// subscriber.) A ticket opens one connection and lives about
// 90 seconds: tickets are never cached nor shared between callers.
package streamticket

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/flowerr"
)

// MaxSubscriptions is the most subscriptions one ticket request may carry.
const MaxSubscriptions = 32

// maxField bounds topic, ua and local_ip.
const maxField = 256

// Gate is the shared egress budget and IP-ban pause every Part 2 call to DingTalk obeys.
type Gate = flowerr.Gate

// Upstream opens Stream connections. *dingtalk.Client implements it.
type Upstream interface {
	OpenConnection(ctx context.Context, app dingtalk.App, r dingtalk.StreamRequest) (dingtalk.StreamTicket, error)
}

// App is one app that may open Stream connections.
type App struct {
	Name string
	Cred dingtalk.App
	// Supported is false for an app type without a client id.
	Supported bool
}

// Options configures Tickets. Gate and Upstream are required.
type Options struct {
	Gate     Gate
	Upstream Upstream
	Apps     []App
	// Timeout bounds one DingTalk call. Default 10s.
	Timeout time.Duration
	// Registerer receives tokend_stream_tickets_total. Default: none.
	Registerer prometheus.Registerer
}

// Results of tokend_stream_tickets_total.
const (
	ResultOK          = "ok"
	ResultRejected    = "rejected"
	ResultUnavailable = "unavailable"
	ResultEgress      = "egress_refused"
)

// Tickets hands out Stream tickets. It is safe for concurrent use.
type Tickets struct {
	gate    Gate
	up      Upstream
	timeout time.Duration
	tickets *prometheus.CounterVec
	apps    atomic.Pointer[map[string]App]
}

// New returns Tickets.
func New(opts Options) (*Tickets, error) {
	if opts.Gate == nil || opts.Upstream == nil {
		return nil, errors.New("streamticket: gate and upstream are required")
	}
	t := &Tickets{gate: opts.Gate, up: opts.Upstream, timeout: opts.Timeout}
	if t.timeout <= 0 {
		t.timeout = 10 * time.Second
	}
	t.tickets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokend_stream_tickets_total",
		Help: "Stream connection tickets by app and result: ok, rejected, unavailable, egress_refused.",
	}, []string{"app", "result"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(t.tickets); err != nil {
			return nil, fmt.Errorf("streamticket: register metrics: %w", err)
		}
	}
	t.SetApps(opts.Apps)
	return t, nil
}

// SetApps replaces the apps (on reload).
func (t *Tickets) SetApps(apps []App) {
	m := make(map[string]App, len(apps))
	for _, a := range apps {
		m[a.Name] = a
	}
	t.apps.Store(&m)
}

// Validate checks a ticket request: 1 to 32 subscriptions, each of type EVENT, CALLBACK or SYSTEM
// with a non-empty topic. The error is a *flowerr.BadRequestError.
func Validate(r dingtalk.StreamRequest) error {
	n := len(r.Subscriptions)
	if n < 1 || n > MaxSubscriptions {
		return &flowerr.BadRequestError{Msg: fmt.Sprintf("subscriptions must hold 1 to %d entries", MaxSubscriptions)}
	}
	for i, s := range r.Subscriptions {
		switch s.Type {
		case "EVENT", "CALLBACK", "SYSTEM":
		default:
			return &flowerr.BadRequestError{Msg: fmt.Sprintf("subscriptions[%d].type must be EVENT, CALLBACK or SYSTEM", i)}
		}
		if s.Topic == "" || len(s.Topic) > maxField || !printable(s.Topic) {
			return &flowerr.BadRequestError{Msg: fmt.Sprintf("subscriptions[%d].topic must be 1 to %d printable characters", i, maxField)}
		}
	}
	if len(r.UA) > maxField || !printable(r.UA) {
		return &flowerr.BadRequestError{Msg: fmt.Sprintf("ua must be at most %d printable characters", maxField)}
	}
	if len(r.LocalIP) > maxField || !printable(r.LocalIP) {
		return &flowerr.BadRequestError{Msg: fmt.Sprintf("local_ip must be at most %d printable characters", maxField)}
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// Open validates r and asks DingTalk for a ticket for the app called app. Errors: flowerr.ErrUnknown,
// flowerr.ErrUnsupported, *flowerr.BadRequestError, *flowerr.RejectedError (DingTalk refused the
// app or the request), *flowerr.UnavailableError, and the Gate's errors as it returned them.
func (t *Tickets) Open(ctx context.Context, app string, r dingtalk.StreamRequest) (dingtalk.StreamTicket, error) {
	a, ok := (*t.apps.Load())[app]
	switch {
	case !ok:
		return dingtalk.StreamTicket{}, flowerr.ErrUnknown
	case !a.Supported:
		return dingtalk.StreamTicket{}, flowerr.ErrUnsupported
	}
	if err := Validate(r); err != nil {
		return dingtalk.StreamTicket{}, err
	}
	tk, result, err := t.open(ctx, a, r)
	t.tickets.WithLabelValues(app, result).Inc()
	return tk, err
}

func (t *Tickets) open(ctx context.Context, a App, r dingtalk.StreamRequest) (dingtalk.StreamTicket, string, error) {
	var tk dingtalk.StreamTicket
	gated, err := flowerr.Call(ctx, t.gate, t.timeout, func(ctx context.Context) (err error) {
		tk, err = t.up.OpenConnection(ctx, a.Cred, r)
		return err
	}, nil)
	var rej *flowerr.RejectedError
	switch {
	case gated:
		return dingtalk.StreamTicket{}, ResultEgress, fmt.Errorf("stream ticket %s: %w", a.Name, err)
	case err == nil:
		return tk, ResultOK, nil
	case errors.As(err, &rej):
		return dingtalk.StreamTicket{}, ResultRejected, err
	}
	return dingtalk.StreamTicket{}, ResultUnavailable, err
}
