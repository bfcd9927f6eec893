package streamticket_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/flowerr"
	"github.com/tokend/tokend/internal/streamticket"
)

var _ streamticket.Upstream = (*dingtalk.Client)(nil)

type gate struct {
	refuse error
	bans   atomic.Int32
}

func (g *gate) Egress(context.Context) error { return g.refuse }
func (g *gate) ReportBan(context.Context)    { g.bans.Add(1) }

func setup(t *testing.T, g *gate) (*streamticket.Tickets, *fakedingtalk.Server, *prometheus.Registry) {
	t.Helper()
	fake := fakedingtalk.New(fakedingtalk.Options{})
	srv := httptest.NewServer(fake)
	t.Cleanup(func() { fake.Close(); srv.Close() })
	fake.AddApp("dingcrm", "crm-secret-1")
	reg := prometheus.NewRegistry()
	up := dingtalk.New(dingtalk.Options{APIBase: srv.URL, OAPIBase: srv.URL})
	tk, err := streamticket.New(streamticket.Options{Gate: g, Upstream: up, Registerer: reg, Apps: []streamticket.App{
		{Name: "crm", Cred: dingtalk.App{Type: dingtalk.Internal, Key: "dingcrm", Secret: "crm-secret-1"}, Supported: true},
		{Name: "wrong", Cred: dingtalk.App{Type: dingtalk.Internal, Key: "dingcrm", Secret: "not-the-secret"}, Supported: true},
		{Name: "org", Supported: false},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return tk, fake, reg
}

var events = dingtalk.StreamRequest{Subscriptions: []dingtalk.Subscription{{Type: "EVENT", Topic: "*"}}}

func TestTicketsAreFreshEveryTime(t *testing.T) {
	tk, fake, reg := setup(t, &gate{})
	a, err := tk.Open(t.Context(), "crm", events)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tk.Open(t.Context(), "crm", events)
	if err != nil || a.Ticket == b.Ticket || fake.FlowCalls().Stream != 2 {
		t.Fatalf("second ticket %v (same: %v), calls %d", err, a.Ticket == b.Ticket, fake.FlowCalls().Stream)
	}
	want := `
# HELP tokend_stream_tickets_total Stream connection tickets by app and result: ok, rejected, unavailable, egress_refused.
# TYPE tokend_stream_tickets_total counter
tokend_stream_tickets_total{app="crm",result="ok"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tokend_stream_tickets_total"); err != nil {
		t.Fatal(err)
	}
}

func TestTicketFailures(t *testing.T) {
	g := &gate{}
	tk, fake, _ := setup(t, g)
	var rej *flowerr.RejectedError
	if _, err := tk.Open(t.Context(), "wrong", events); !errors.As(err, &rej) || rej.Upstream.Code != "invalidClientIdOrSecret" || strings.Contains(err.Error(), "not-the-secret") {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := tk.Open(t.Context(), "org", events); !errors.Is(err, flowerr.ErrUnsupported) {
		t.Fatalf("corp app: %v", err)
	}
	if _, err := tk.Open(t.Context(), "hr", events); !errors.Is(err, flowerr.ErrUnknown) {
		t.Fatalf("unknown app: %v", err)
	}
	fake.SetFault("", fakedingtalk.Fault{Mode: fakedingtalk.FaultBanHTML})
	g.refuse = errors.New("budget spent")
	before := fake.FlowCalls().Stream
	if _, err := tk.Open(t.Context(), "crm", events); !errors.Is(err, g.refuse) || fake.FlowCalls().Stream != before {
		t.Fatalf("egress refused: %v, calls %d", err, fake.FlowCalls().Stream-before)
	}
}

func TestValidate(t *testing.T) {
	many := make([]dingtalk.Subscription, 33)
	for i := range many {
		many[i] = dingtalk.Subscription{Type: "EVENT", Topic: "*"}
	}
	for name, r := range map[string]dingtalk.StreamRequest{
		"none":        {},
		"33":          {Subscriptions: many},
		"lower type":  {Subscriptions: []dingtalk.Subscription{{Type: "event", Topic: "*"}}},
		"other type":  {Subscriptions: []dingtalk.Subscription{{Type: "WEBHOOK", Topic: "*"}}},
		"no topic":    {Subscriptions: []dingtalk.Subscription{{Type: "EVENT"}}},
		"control ua":  {Subscriptions: events.Subscriptions, UA: "a\nb"},
		"huge ip":     {Subscriptions: events.Subscriptions, LocalIP: strings.Repeat("1", 300)},
		"topic ctrls": {Subscriptions: []dingtalk.Subscription{{Type: "SYSTEM", Topic: "\x00"}}},
	} {
		var bad *flowerr.BadRequestError
		if err := streamticket.Validate(r); !errors.As(err, &bad) {
			t.Errorf("%s: %v", name, err)
		}
	}
	ok := dingtalk.StreamRequest{Subscriptions: append(many[:30], dingtalk.Subscription{Type: "CALLBACK", Topic: "/v1.0/im/bot/messages/get"},
		dingtalk.Subscription{Type: "SYSTEM", Topic: "*"}), UA: "dingtalk-sdk-go/0.9", LocalIP: "10.0.0.1"}
	if err := streamticket.Validate(ok); err != nil {
		t.Errorf("32 subscriptions: %v", err)
	}
}
