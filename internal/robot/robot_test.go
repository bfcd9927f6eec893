package robot_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakeclock"
	"github.com/tokend/tokend/internal/flowerr"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/robot"
	"github.com/tokend/tokend/internal/store"
)

var (
	_ robot.Store    = (*store.Memory)(nil)
	_ robot.Store    = (*store.Redis)(nil)
	_ robot.Upstream = (*dingtalk.Client)(nil)
)

// The vector was computed outside Go:
//
//	printf '1763800000000\nSEC2f1d…f1e0' | openssl dgst -sha256 -hmac 'SEC2f1d…f1e0' -binary | base64
//
// (with the whole secret below), then URL-encoded with Python's urllib.parse.quote_plus.
const (
	vectorSecret = "SEC2f1d0c9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0"
	vectorTS     = 1763800000000
	vectorSign   = "Hj0uOE9ix3hMiHVhWiamz8R3FO/HXe1n9TkTLPCB4mY="
	vectorQuery  = "Hj0uOE9ix3hMiHVhWiamz8R3FO%2FHXe1n9TkTLPCB4mY%3D"
)

func TestSignMatchesAnIndependentlyComputedVector(t *testing.T) {
	if got := robot.Sign(vectorSecret, vectorTS); got != vectorSign {
		t.Fatalf("Sign = %q, want %q", got, vectorSign)
	}
}

type gate struct {
	refuse error
	bans   atomic.Int32
}

func (g *gate) Egress(context.Context) error { return g.refuse }
func (g *gate) ReportBan(context.Context)    { g.bans.Add(1) }

// upstream records messages and answers with err (nil: success).
type upstream struct {
	mu   sync.Mutex
	msgs []dingtalk.RobotMessage
	err  error
}

func (u *upstream) RobotSend(_ context.Context, m dingtalk.RobotMessage) ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.msgs = append(u.msgs, m)
	if u.err != nil {
		return nil, u.err
	}
	return []byte(`{"errcode":0,"errmsg":"ok"}`), nil
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.msgs)
}

func newSender(t *testing.T, st robot.Store, g robot.Gate, up robot.Upstream, now func() time.Time, reg prometheus.Registerer) *robot.Sender {
	t.Helper()
	s, err := robot.New(robot.Options{Store: st, Gate: g, Upstream: up, Now: now, Registerer: reg,
		Robots: []robot.Robot{{Name: "alerts", AccessToken: "robot-token-1", Secret: vectorSecret}, {Name: "plain", AccessToken: "robot-token-2"}}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const msg = `{"msgtype":"text","text":{"content":"disk full"}}`

func TestSendSignsAndForwardsByteForByte(t *testing.T) {
	var gotQuery, gotBody, gotType string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery, gotType = r.URL.RawQuery, r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"errcode":0,"errmsg":"ok"}`)
	}))
	t.Cleanup(srv.Close)
	c := fakeclock.New(time.UnixMilli(vectorTS))
	up := dingtalk.New(dingtalk.Options{OAPIBase: srv.URL})
	s := newSender(t, store.NewMemory(store.MemoryOptions{Now: c.Now}), &gate{}, up, c.Now, nil)
	body := msg + "  \n" // odd whitespace must survive
	ans, err := s.Send(t.Context(), "alerts", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if string(ans) != `{"errcode":0,"errmsg":"ok"}` || gotBody != body || gotType != "application/json" {
		t.Fatalf("answer %q, forwarded body %q, content type %q", ans, gotBody, gotType)
	}
	want := "access_token=robot-token-1&sign=" + vectorQuery + "&timestamp=1763800000000"
	if gotQuery != want {
		t.Fatalf("query = %q, want %q", gotQuery, want)
	}
	if _, err := s.Send(t.Context(), "plain", []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if gotQuery != "access_token=robot-token-2" {
		t.Fatalf("unsigned robot's query = %q", gotQuery)
	}
	if _, err := s.Send(t.Context(), "nobody", []byte(msg)); !errors.Is(err, flowerr.ErrUnknown) {
		t.Fatalf("unknown robot: %v", err)
	}
}

func testWindow(t *testing.T, senders []*robot.Sender, up *upstream, advance func(time.Duration)) {
	var wg sync.WaitGroup
	var sent, limited atomic.Int32
	for i := range 25 {
		s := senders[i%len(senders)]
		wg.Go(func() {
			_, err := s.Send(context.Background(), "alerts", []byte(msg))
			var rl *flowerr.RateLimitedError
			switch {
			case err == nil:
				sent.Add(1)
			case errors.As(err, &rl) && rl.RetryAfter > 0 && rl.RetryAfter <= time.Minute:
				limited.Add(1)
			default:
				t.Errorf("send: %v", err)
			}
		})
	}
	wg.Wait()
	if sent.Load() != 20 || limited.Load() != 5 || up.count() != 20 {
		t.Fatalf("sent %d, refused %d, reached dingtalk %d; want 20, 5, 20", sent.Load(), limited.Load(), up.count())
	}
	if advance != nil {
		advance(time.Minute)
		if _, err := senders[0].Send(t.Context(), "alerts", []byte(msg)); err != nil {
			t.Fatalf("a minute later: %v", err)
		}
	}
}

func TestWindowOfTwentyAcrossReplicas(t *testing.T) {
	c := fakeclock.New(time.Now())
	st := store.NewMemory(store.MemoryOptions{Now: c.Now})
	up := &upstream{}
	reg := prometheus.NewRegistry()
	a := newSender(t, st, &gate{}, up, c.Now, reg)
	b := newSender(t, st, &gate{}, up, c.Now, nil)
	testWindow(t, []*robot.Sender{a, b}, up, c.Advance)
	// a took 13 of the 25 messages, then one more a minute later; only a's metrics are registered.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() == "tokend_robot_messages_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	if total != 14 {
		t.Fatalf("a counted %v messages, want 14", total)
	}
}

func TestWindowOfTwentyAcrossReplicasOnRealRedis(t *testing.T) {
	srv := redistest.Start(t)
	up := &upstream{}
	var senders []*robot.Sender
	for range 3 {
		st, err := store.OpenRedis(store.RedisOptions{URL: srv.URL(), Prefix: "robottest"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		senders = append(senders, newSender(t, st, &gate{}, up, time.Now, nil))
	}
	testWindow(t, senders, up, nil)
}

func TestBlockedRobotIsPausedOnEveryReplica(t *testing.T) {
	c := fakeclock.New(time.Now())
	st := store.NewMemory(store.MemoryOptions{Now: c.Now})
	up := &upstream{err: &dingtalk.Error{Family: dingtalk.FamilyLegacy, Status: 200, Code: "410100", Message: "send too fast"}}
	a := newSender(t, st, &gate{}, up, c.Now, nil)
	b := newSender(t, st, &gate{}, up, c.Now, nil)
	_, err := a.Send(t.Context(), "alerts", []byte(msg))
	var un *flowerr.UnavailableError
	if !errors.As(err, &un) || un.RetryAfter != robot.DefaultBlock || un.Upstream.Code != "410100" {
		t.Fatalf("410100: %v", err)
	}
	c.Advance(4 * time.Minute)
	_, err = b.Send(t.Context(), "alerts", []byte(msg))
	if !errors.As(err, &un) || un.RetryAfter != 6*time.Minute {
		t.Fatalf("the other replica: %v", err)
	}
	if up.count() != 1 {
		t.Fatalf("dingtalk called %d times during the block", up.count())
	}
	if _, err := b.Send(t.Context(), "plain", []byte(msg)); !errors.As(err, &un) || un.RetryAfter != robot.DefaultBlock {
		// plain also answers 410100 here (the fake upstream answers so for all): it pauses itself.
		t.Fatalf("another robot is not paused by the first: %v", err)
	}
	up.mu.Lock()
	up.err = nil
	up.mu.Unlock()
	c.Advance(6 * time.Minute)
	if _, err := a.Send(t.Context(), "alerts", []byte(msg)); err != nil {
		t.Fatalf("after the block: %v", err)
	}
}

func TestRefusalsAndFailures(t *testing.T) {
	c := fakeclock.New(time.Now())
	for _, tc := range []struct {
		name   string
		upErr  error
		gate   error
		check  func(error) bool
		called int
		bans   int32
	}{
		{"sign mismatch", &dingtalk.Error{Family: dingtalk.FamilyLegacy, Status: 200, Code: "310000"}, nil, func(err error) bool {
			var rej *flowerr.RejectedError
			return errors.As(err, &rej) && rej.Upstream.Code == "310000"
		}, 1, 0},
		{"robot disabled", &dingtalk.Error{Family: dingtalk.FamilyLegacy, Status: 200, Code: "400013"}, nil, func(err error) bool {
			var rej *flowerr.RejectedError
			return errors.As(err, &rej)
		}, 1, 0},
		{"ip ban", &dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 403, Code: dingtalk.CodeIPBan, Class: dingtalk.ClassBanned}, nil, func(err error) bool {
			var un *flowerr.UnavailableError
			return errors.As(err, &un) && un.RetryAfter == flowerr.BanPause
		}, 1, 1},
		{"dingtalk down", &dingtalk.Error{Family: dingtalk.FamilyTransport, Status: 502, Code: "http_502"}, nil, func(err error) bool {
			var un *flowerr.UnavailableError
			return errors.As(err, &un)
		}, 1, 0},
		{"egress refused", nil, errGate, func(err error) bool { return errors.Is(err, errGate) }, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := &upstream{err: tc.upErr}
			g := &gate{refuse: tc.gate}
			s := newSender(t, store.NewMemory(store.MemoryOptions{Now: c.Now}), g, up, c.Now, nil)
			_, err := s.Send(t.Context(), "alerts", []byte(msg))
			if !tc.check(err) || up.count() != tc.called || g.bans.Load() != tc.bans {
				t.Fatalf("err %v, calls %d, bans %d", err, up.count(), g.bans.Load())
			}
			if err != nil && strings.Contains(err.Error(), "robot-token-1") {
				t.Fatal("error holds the robot token")
			}
		})
	}
}

var errGate = errors.New("egress budget spent")
