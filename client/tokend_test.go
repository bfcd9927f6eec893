package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/store"
)

// The apps of the in-test tokend.
const (
	appCRM    = "crm"    // new API, jsapi ticket, SHA-1 signatures
	appLegacy = "legacy" // legacy API, no ticket
	appBroken = "broken" // DingTalk refuses its credentials
	appOther  = "other"  // exists, but the limited client may not use it
	appFlaky  = "flaky"  // DingTalk is busy for it

	corpID  = "dingcorptest"
	agentID = "310804070"
)

// testTokend is a real tokend (broker over a memory store, the HTTP API, the fake DingTalk) on loopback.
type testTokend struct {
	URL  string
	Fake *fakedingtalk.Server
	// Key may use every app; LimitedKey only crm.
	Key, LimitedKey string
}

// startTokend starts a tokend for one test; everything stops when the test ends.
func startTokend(tb testing.TB) *testTokend {
	tb.Helper()
	fake := fakedingtalk.New(fakedingtalk.Options{})
	creds := map[string][2]string{ // app -> DingTalk appKey, secret
		appCRM:    {"dingcrmkey", "crm-secret-8f1e2d"},
		appLegacy: {"dinglegacykey", "legacy-secret-77aa"},
		appOther:  {"dingotherkey", "other-secret-19cc"},
		appBroken: {"dingbrokenkey", "broken-secret-0b0b"},
		appFlaky:  {"dingflakykey", "flaky-secret-5e5e"},
	}
	for _, c := range creds {
		fake.AddApp(c[0], c[1])
	}
	fake.SetFault(creds[appBroken][0], fakedingtalk.Fault{Mode: fakedingtalk.FaultBadCredentials})
	fake.SetFault(creds[appFlaky][0], fakedingtalk.Fault{Mode: fakedingtalk.FaultBusy})
	fakeSrv := httptest.NewServer(fake)
	tb.Cleanup(func() {
		fake.Close()
		fakeSrv.Close()
	})

	up := dingtalk.New(dingtalk.Options{APIBase: fakeSrv.URL, OAPIBase: fakeSrv.URL})
	cred := func(app string, api dingtalk.API) dingtalk.App {
		return dingtalk.App{Type: dingtalk.Internal, API: api, Key: creds[app][0], Secret: creds[app][1]}
	}
	warm := make(chan struct{})
	b, err := broker.New(broker.Options{
		Store:    store.NewMemory(store.MemoryOptions{}),
		Upstream: up,
		Logger:   slog.New(&signalHandler{msg: warmUpMessage, ch: warm, once: &sync.Once{}}),
		Apps: []broker.App{
			{Name: appCRM, Cred: cred(appCRM, dingtalk.V1), JSAPITicket: true},
			{Name: appLegacy, Cred: cred(appLegacy, dingtalk.Legacy)},
			{Name: appOther, Cred: cred(appOther, dingtalk.V1)},
			{Name: appBroken, Cred: cred(appBroken, dingtalk.V1)},
			{Name: appFlaky, Cred: cred(appFlaky, dingtalk.Legacy)},
		},
	})
	if err != nil {
		tb.Fatalf("broker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	// Wait for the warm-up, as a load balancer would wait for /readyz: the tokens are then in
	// memory, and no warm-up refresh is still starting when the test ends and stops the broker.
	select {
	case <-warm:
	case <-time.After(10 * time.Second):
		tb.Fatal("the broker's warm-up did not complete")
	}

	key, _, err := config.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	limited, _, err := config.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Options{
		Broker: b,
		Apps: []httpapi.App{
			{Name: appCRM, Type: string(dingtalk.Internal), JSAPITicket: true, CorpID: corpID, AgentID: agentID},
			{Name: appLegacy, Type: string(dingtalk.Internal)},
			{Name: appOther, Type: string(dingtalk.Internal)},
			{Name: appBroken, Type: string(dingtalk.Internal)},
			{Name: appFlaky, Type: string(dingtalk.Internal)},
		},
		Clients: []httpapi.Client{
			{Name: "all", KeySHA256: config.HashKey(key), Apps: []string{"*"}},
			{Name: "limited", KeySHA256: config.HashKey(limited), Apps: []string{appCRM}},
		},
	})
	if err != nil {
		tb.Fatalf("httpapi.New: %v", err)
	}
	srv := httptest.NewServer(api.Handler())
	tb.Cleanup(srv.Close)
	return &testTokend{URL: srv.URL, Fake: fake, Key: key, LimitedKey: limited}
}

// warmUpMessage is what the broker logs when its warm-up has tried every credential once.
const warmUpMessage = "warm-up complete"

// signalHandler is a slog.Handler that closes ch when a record with message msg is logged, and drops
// every record.
type signalHandler struct {
	msg  string
	ch   chan struct{}
	once *sync.Once
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *signalHandler) WithGroup(string) slog.Handler            { return h }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}

// countingTransport counts the requests a Client makes. If gate is set, every request waits for it to
// be closed before going out.
type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int64
	gate chan struct{}
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	return c.base.RoundTrip(r)
}

// testClock runs with real time plus an offset the test moves.
type testClock struct{ offset atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *testClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// newClient returns a Client of tk with key, counting its requests.
func (tk *testTokend) newClient(tb testing.TB, key string, opts *Options) (*Client, *countingTransport) {
	tb.Helper()
	ct := &countingTransport{base: http.DefaultTransport}
	if opts == nil {
		opts = &Options{}
	}
	opts.HTTPClient = &http.Client{Transport: ct}
	c, err := New(tk.URL, key, opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return c, ct
}

// fp is a short fingerprint of a secret, for failure messages.
func fp(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:4])
}
