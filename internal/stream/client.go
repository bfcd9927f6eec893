// Package stream is tokend's own DingTalk Stream subscriber: it opens a connection through an
// injected function (POST /v1.0/gateway/connections/open, made by whoever holds the secret), keeps a
// WebSocket to the gateway, answers pings, hands EVENT and CALLBACK frames to a handler and
// acknowledges them, and reconnects with back-off. Leader and Lease make sure one replica at a time
// subscribes for a suite. It knows nothing of suites, tickets or stores.
package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Endpoint is what opening a connection returns: the gateway's WebSocket URL and a single-use ticket.
// The ticket is a secret: never log it.
type Endpoint struct {
	URL    string
	Ticket string
}

// Frame is one data frame from the gateway.
type Frame struct {
	SpecVersion string            `json:"specVersion"`
	Type        string            `json:"type"` // SYSTEM, EVENT or CALLBACK
	Headers     map[string]string `json:"headers"`
	Data        string            `json:"data"`
}

// Topic returns the frame's topic header.
func (f Frame) Topic() string { return f.Headers["topic"] }

// MessageID returns the frame's messageId header.
func (f Frame) MessageID() string { return f.Headers["messageId"] }

// ack is the answer to a frame.
type ack struct {
	Code    int               `json:"code"`
	Headers map[string]string `json:"headers"`
	Message string            `json:"message"`
	Data    string            `json:"data"`
}

// Defaults of Options.
const (
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = time.Minute
	DefaultKeepAlive    = 2 * time.Minute
	DefaultHandleTimout = 10 * time.Second
	// maxFrame bounds one frame read from the gateway.
	maxFrame = 1 << 20
)

// Options configures New.
type Options struct {
	// Open obtains a connection endpoint and ticket (DingTalk's connections/open). Required.
	Open func(ctx context.Context) (Endpoint, error)
	// Handle receives every EVENT and CALLBACK frame, one at a time, in the order received. nil means
	// the frame was taken: it is acknowledged with code 200 and status SUCCESS. An error
	// acknowledges it with code 500 and status LATER, so that the gateway sends it again. Required.
	Handle func(ctx context.Context, f Frame) error
	// MinBackoff and MaxBackoff bound the wait before reconnecting after a failure (doubling, with
	// jitter); defaults DefaultMinBackoff and DefaultMaxBackoff. A disconnect the gateway asked for is
	// followed by an immediate reconnect.
	MinBackoff, MaxBackoff time.Duration
	// KeepAlive is how often a WebSocket ping checks the connection; an unanswered ping (within
	// KeepAlive/4, at most 5 s) drops the connection and reconnects. Default DefaultKeepAlive.
	KeepAlive time.Duration
	// HandleTimeout bounds one Handle call; default DefaultHandleTimout.
	HandleTimeout time.Duration
	// Logger gets connection events (never a ticket or event data); default discard.
	Logger *slog.Logger
	// OnConnect, if set, is called after each successful connection (tests and metrics).
	OnConnect func()
}

// Client subscribes to DingTalk Stream. Run it once; it is not safe to Run twice at the same time.
type Client struct {
	o Options
}

// New returns a Client. It panics without Open or Handle (a wiring bug).
func New(o Options) *Client {
	if o.Open == nil || o.Handle == nil {
		panic("stream: New without Open or Handle")
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.HandleTimeout <= 0 {
		o.HandleTimeout = DefaultHandleTimout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{o: o}
}

// errDisconnect says the gateway asked the client to reconnect.
var errDisconnect = errors.New("gateway asked to disconnect")

// Run connects and serves until ctx ends, reconnecting after every failure or disconnect; it
// returns nil then.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.o.MinBackoff
	for ctx.Err() == nil {
		served, err := c.once(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if served {
			backoff = c.o.MinBackoff
		}
		if errors.Is(err, errDisconnect) {
			c.o.Logger.Info("stream reconnecting at the gateway's request")
			continue
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		c.o.Logger.Warn("stream connection failed", "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, c.o.MaxBackoff)
	}
	return nil
}

// once opens one connection and serves it until it fails, the gateway disconnects or ctx ends. served
// reports whether the gateway sent at least one frame.
func (c *Client) once(ctx context.Context) (served bool, err error) {
	ep, err := c.o.Open(ctx)
	if err != nil {
		return false, fmt.Errorf("open stream connection: %w", err)
	}
	u, err := dialURL(ep)
	if err != nil {
		return false, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, _, err := websocket.Dial(dctx, u, nil)
	cancel()
	if err != nil {
		// The URL carries the ticket: never let it into the error.
		return false, fmt.Errorf("dial stream gateway: %w", scrub(err, ep.Ticket))
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxFrame)
	if c.o.OnConnect != nil {
		c.o.OnConnect()
	}
	c.o.Logger.Info("stream connected")

	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go c.keepAlive(cctx, conn, stop)
	for {
		_, b, err := conn.Read(cctx)
		if err != nil {
			if ctx.Err() != nil {
				conn.Close(websocket.StatusNormalClosure, "shutting down")
				return served, nil
			}
			return served, fmt.Errorf("read stream frame: %w", err)
		}
		served = true
		var f Frame
		if err := json.Unmarshal(b, &f); err != nil {
			c.o.Logger.Warn("stream frame undecodable", "bytes", len(b))
			continue
		}
		switch {
		case f.Type == "SYSTEM" && f.Topic() == "ping":
			err = c.answer(cctx, conn, f, 200, f.Data)
		case f.Type == "SYSTEM" && f.Topic() == "disconnect":
			conn.Close(websocket.StatusNormalClosure, "disconnect")
			return true, errDisconnect
		case f.Type == "EVENT" || f.Type == "CALLBACK":
			hctx, cancel := context.WithTimeout(cctx, c.o.HandleTimeout)
			herr := c.o.Handle(hctx, f)
			cancel()
			if herr != nil {
				c.o.Logger.Warn("stream event not taken; the gateway will send it again", "type", f.Type,
					"event_type", f.Headers["eventType"], "message_id", f.MessageID(), "err", herr)
				err = c.answer(cctx, conn, f, 500, `{"status":"LATER","message":"later"}`)
			} else {
				err = c.answer(cctx, conn, f, 200, `{"status":"SUCCESS","message":"success"}`)
			}
		default:
			err = c.answer(cctx, conn, f, 404, "")
		}
		if err != nil {
			return served, fmt.Errorf("answer stream frame: %w", err)
		}
	}
}

// answer writes the acknowledgement of f.
func (c *Client) answer(ctx context.Context, conn *websocket.Conn, f Frame, code int, data string) error {
	msg := "OK"
	if code != 200 {
		msg = "error"
	}
	b, err := json.Marshal(ack{Code: code, Headers: map[string]string{"contentType": "application/json", "messageId": f.MessageID()}, Message: msg, Data: data})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return conn.Write(wctx, websocket.MessageText, b)
}

// keepAlive pings the connection every KeepAlive and drops it (stop) when a ping goes unanswered.
func (c *Client) keepAlive(ctx context.Context, conn *websocket.Conn, stop context.CancelFunc) {
	t := time.NewTicker(c.o.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, min(c.o.KeepAlive/4, 5*time.Second))
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				c.o.Logger.Warn("stream ping unanswered; reconnecting")
				stop()
				return
			}
		}
	}
}

// dialURL is the endpoint with its ticket as a query parameter.
func dialURL(ep Endpoint) (string, error) {
	u, err := url.Parse(ep.URL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" || ep.Ticket == "" {
		return "", errors.New("stream endpoint must be a ws:// or wss:// URL with a ticket")
	}
	q := u.Query()
	q.Set("ticket", ep.Ticket)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// scrubbed is an error whose text had a secret removed; it still unwraps to the original.
type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }
func (s *scrubbed) Unwrap() error { return s.err }

func scrub(err error, secret string) error {
	if secret == "" {
		return err
	}
	msg := err.Error()
	for _, s := range []string{secret, url.QueryEscape(secret)} {
		msg = strings.ReplaceAll(msg, s, "[ticket]")
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbed{msg: msg, err: err}
}
