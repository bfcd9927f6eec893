package stream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/stream"
	"github.com/tokend/tokend/internal/suite"
)

// gateway is the fake DingTalk with one suite, served on loopback.
type gateway struct {
	fake *fakedingtalk.Server
	url  string
}

func newGateway(t *testing.T) *gateway {
	t.Helper()
	f := fakedingtalk.New(fakedingtalk.Options{})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Cleanup(f.Close) // first: ends the WebSockets
	f.AddSuite("suite1", "secret1", false)
	return &gateway{fake: f, url: srv.URL}
}

// open is what tokend's upstream client will do: POST connections/open with the suite's key and secret.
func (g *gateway) open(secret string) func(ctx context.Context) (stream.Endpoint, error) {
	return func(ctx context.Context) (stream.Endpoint, error) {
		body := fmt.Sprintf(`{"clientId":"suite1","clientSecret":%q,"subscriptions":[{"type":"EVENT","topic":"*"},{"type":"SYSTEM","topic":"ping"}],"ua":"tokend"}`, secret)
		req, err := http.NewRequestWithContext(ctx, "POST", g.url+"/v1.0/gateway/connections/open", strings.NewReader(body))
		if err != nil {
			return stream.Endpoint{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return stream.Endpoint{}, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return stream.Endpoint{}, fmt.Errorf("open: HTTP %d", resp.StatusCode)
		}
		var ep struct{ Endpoint, Ticket string }
		if err := json.NewDecoder(resp.Body).Decode(&ep); err != nil {
			return stream.Endpoint{}, err
		}
		return stream.Endpoint{URL: ep.Endpoint, Ticket: ep.Ticket}, nil
	}
}

func (g *gateway) wait(t *testing.T, what string, cond func(fakedingtalk.StreamStats) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := g.fake.Wait(ctx, func() bool { return cond(g.fake.StreamStats("suite1")) }); err != nil {
		t.Fatalf("%s: not reached, stats %+v", what, g.fake.StreamStats("suite1"))
	}
}

// ticketSink keeps suite tickets in a store, as the broker will.
type ticketSink struct {
	st interface {
		PutSuiteTicket(ctx context.Context, app string, t store.SuiteTicket) (store.SuiteTicket, bool, error)
		GetSuiteTicket(ctx context.Context, app string) (store.SuiteTicket, bool, error)
	}
	fail atomic.Bool
}

func (s *ticketSink) SuiteTicket(ctx context.Context, app, ticket string, at time.Time) error {
	if s.fail.Load() {
		return errors.New("store down")
	}
	_, _, err := s.st.PutSuiteTicket(ctx, app, store.SuiteTicket{Value: ticket, PushedAt: at})
	return err
}
func (s *ticketSink) CorpAuthorized(context.Context, string, string, time.Time) error { return nil }
func (s *ticketSink) CorpRelieved(context.Context, string, string, time.Time) error   { return nil }

// handler adapts frames to the sink, as the wiring will.
func handler(sink suite.Sink) func(ctx context.Context, f stream.Frame) error {
	return func(ctx context.Context, f stream.Frame) error {
		var born time.Time
		if ms, err := strconv.ParseInt(f.Headers["eventBornTime"], 10, 64); err == nil {
			born = time.UnixMilli(ms)
		}
		return suite.HandleStreamEvent(ctx, sink, "saas", []byte(f.Data), born)
	}
}

// run starts c.Run and stops it when the test ends, checking that it returns.
func run(t *testing.T, c *stream.Client) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return cancel
}

// tickets makes suite_ticket events whose pushes are a second apart, so each is newer than the last
// by more than the store's millisecond resolution (two pushes in one millisecond keep the first).
type tickets struct {
	next time.Time
}

func newTickets() *tickets { return &tickets{next: time.Now().Truncate(time.Second)} }

func (ts *tickets) event() fakedingtalk.ISVEvent {
	ts.next = ts.next.Add(time.Second)
	return fakedingtalk.ISVEvent{Type: fakedingtalk.EventSuiteTicket, PushedAt: ts.next}
}

func storedTicket(t *testing.T, st interface {
	GetSuiteTicket(ctx context.Context, app string) (store.SuiteTicket, bool, error)
}) string {
	t.Helper()
	v, _, err := st.GetSuiteTicket(t.Context(), "saas")
	if err != nil {
		t.Fatal(err)
	}
	return v.Value
}

func TestClientEventsPingsDisconnects(t *testing.T) {
	g := newGateway(t)
	sink := &ticketSink{st: store.NewMemory(store.MemoryOptions{})}
	var logs syncBuffer
	c := stream.New(stream.Options{Open: g.open("secret1"), Handle: handler(sink), MinBackoff: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	run(t, c)
	g.wait(t, "connected", func(s fakedingtalk.StreamStats) bool { return s.Connections == 1 })

	ts := newTickets()
	_, res, err := g.fake.PublishStream("suite1", ts.event())
	if err != nil {
		t.Fatal(err)
	}
	g.wait(t, "event acknowledged", func(s fakedingtalk.StreamStats) bool { return s.Acked == 1 && s.Pending == 0 })
	if got := storedTicket(t, sink.st); got != res.SuiteTicket {
		t.Fatal("the stored ticket is not the one published")
	}

	if g.fake.PingStream("suite1") != 1 {
		t.Fatal("no connection to ping")
	}
	g.wait(t, "ping answered", func(s fakedingtalk.StreamStats) bool { return s.Pongs == 1 })

	// disconnect: the client opens a new connection at once and keeps receiving.
	g.fake.DisconnectStream("suite1")
	g.wait(t, "reconnected", func(s fakedingtalk.StreamStats) bool { return s.Opens == 2 && s.Connections == 1 })
	_, res, _ = g.fake.PublishStream("suite1", ts.event())
	g.wait(t, "second event acknowledged", func(s fakedingtalk.StreamStats) bool { return s.Acked == 2 && s.Pending == 0 })
	if got := storedTicket(t, sink.st); got != res.SuiteTicket {
		t.Fatal("the stored ticket is not the newest published")
	}

	// An event the sink cannot keep is answered LATER and stays pending; redelivered once the sink
	// works again, it is taken.
	sink.fail.Store(true)
	_, res, _ = g.fake.PublishStream("suite1", ts.event())
	g.wait(t, "event refused", func(s fakedingtalk.StreamStats) bool { return s.Refused == 1 && s.Pending == 1 })
	sink.fail.Store(false)
	if g.fake.RedeliverStream("suite1") != 1 {
		t.Fatal("nothing to redeliver")
	}
	g.wait(t, "redelivered event taken", func(s fakedingtalk.StreamStats) bool { return s.Pending == 0 && s.Acked == 3 })
	if got := storedTicket(t, sink.st); got != res.SuiteTicket {
		t.Fatal("the redelivered ticket was not stored")
	}
	// An event tokend cannot use is acknowledged, not refused forever.
	g.fake.PublishStream("suite1", fakedingtalk.ISVEvent{Type: fakedingtalk.EventCheckURL})
	g.wait(t, "unusable event acknowledged", func(s fakedingtalk.StreamStats) bool { return s.Pending == 0 && s.Acked == 4 })
	if strings.Contains(logs.String(), res.SuiteTicket) {
		t.Fatal("logs carry a suite ticket")
	}
}

func TestClientRetriesOpenWithBackoff(t *testing.T) {
	g := newGateway(t)
	var opens atomic.Int32
	good := g.open("secret1")
	var logs syncBuffer
	c := stream.New(stream.Options{
		Open: func(ctx context.Context) (stream.Endpoint, error) {
			if opens.Add(1) <= 3 {
				return stream.Endpoint{}, errors.New("gateway says no")
			}
			return good(ctx)
		},
		Handle:     func(context.Context, stream.Frame) error { return nil },
		MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	run(t, c)
	g.wait(t, "connected after failures", func(s fakedingtalk.StreamStats) bool { return s.Connections == 1 })
	if n := opens.Load(); n != 4 {
		t.Fatalf("%d opens, want 4", n)
	}
	if !strings.Contains(logs.String(), "stream connection failed") {
		t.Fatalf("failures not logged: %s", logs.String())
	}
}

func TestClientNeverLogsTheTicket(t *testing.T) {
	var logs syncBuffer
	const ticket = "SECRET-TICKET-9f2"
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	c := stream.New(stream.Options{
		Open: func(context.Context) (stream.Endpoint, error) {
			if calls.Add(1) == 3 {
				cancel()
			}
			// Nothing listens there: the dial fails with the URL in its error.
			return stream.Endpoint{URL: "ws://127.0.0.1:1/connect", Ticket: ticket}, nil
		},
		Handle:     func(context.Context, stream.Frame) error { return nil },
		MinBackoff: time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "dial stream gateway") || strings.Contains(out, ticket) {
		t.Fatalf("logs: %s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
