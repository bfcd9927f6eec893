package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/grant"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/robot"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/streamticket"
	"github.com/tokend/tokend/internal/token"
)

type openGate struct{}

func (openGate) Egress(context.Context) error { return nil }
func (openGate) ReportBan(context.Context)    {}

type noBroker struct{}

func (noBroker) Token(context.Context, token.Key) (token.Token, error) { return token.Token{}, nil }
func (noBroker) Invalidate(context.Context, string, string) (token.Token, error) {
	return token.Token{}, nil
}
func (noBroker) Status() []broker.AppStatus { return nil }
func (noBroker) Ready() bool                { return true }
func (noBroker) StoreUp() bool              { return true }

// startFlowsTokend is a tokend serving the flows (user tokens, Stream tickets, one robot) over a
// memory store and the fake DingTalk.
func startFlowsTokend(t *testing.T) (*Client, *fakedingtalk.Server) {
	t.Helper()
	fake := fakedingtalk.New(fakedingtalk.Options{})
	fakeSrv := httptest.NewServer(fake)
	t.Cleanup(func() { fake.Close(); fakeSrv.Close() })
	fake.AddApp("dingcrmkey", "crm-secret-8f1e2d")
	fake.AddRobot("robot-token-abc", "SECrobot-secret")
	up := dingtalk.New(dingtalk.Options{APIBase: fakeSrv.URL, OAPIBase: fakeSrv.URL})
	st := store.NewMemory(store.MemoryOptions{})
	cred := dingtalk.App{Type: dingtalk.Internal, Key: "dingcrmkey", Secret: "crm-secret-8f1e2d"}
	g, err := grant.New(grant.Options{Store: st, Gate: openGate{}, Upstream: up, Apps: []grant.App{{Name: appCRM, Cred: cred, Supported: true}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := streamticket.New(streamticket.Options{Gate: openGate{}, Upstream: up, Apps: []streamticket.App{{Name: appCRM, Cred: cred, Supported: true}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := robot.New(robot.Options{Store: st, Gate: openGate{}, Upstream: up, Robots: []robot.Robot{{Name: "alerts", AccessToken: "robot-token-abc", Secret: "SECrobot-secret"}}})
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := config.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Options{Broker: noBroker{}, Apps: []httpapi.App{{Name: appCRM, Type: "dingtalk"}},
		Clients: []httpapi.Client{{Name: "svc", KeySHA256: config.HashKey(key)}}})
	if err != nil {
		t.Fatal(err)
	}
	api.SetFlows(httpapi.Flows{Grants: g, Streams: s, Robots: r},
		map[string]httpapi.Permissions{"svc": {UserTokens: []string{appCRM}, Streams: []string{appCRM}, Robots: []string{"alerts"}}})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, fake
}

func TestUserTokenAndRefresh(t *testing.T) {
	c, fake := startFlowsTokend(t)
	code := fake.MintCode("dingcrmkey", "dingcorp")
	a, err := c.UserToken(t.Context(), appCRM, code)
	if err != nil || a.AccessToken == "" || a.RefreshToken == "" || a.CorpID != "dingcorp" || a.ExpiresIn <= 0 {
		t.Fatalf("UserToken: %+v, %v", a, err)
	}
	again, err := c.UserToken(t.Context(), appCRM, code)
	if err != nil || again.AccessToken != a.AccessToken {
		t.Fatalf("retry of the same code: %v (same token: %v)", err, again.AccessToken == a.AccessToken)
	}
	b, err := c.RefreshUserToken(t.Context(), appCRM, a.RefreshToken)
	if err != nil || b.AccessToken == a.AccessToken {
		t.Fatalf("RefreshUserToken: %v", err)
	}
	_, err = c.UserToken(t.Context(), appCRM, "fake-code-unknown")
	var e *Error
	if !errors.Is(err, ErrInvalidGrant) || !errors.As(err, &e) || e.UpstreamCode != "invalidAuthCode" || strings.Contains(err.Error(), "fake-code-unknown") {
		t.Fatalf("unknown code: %v", err)
	}
	if _, err := c.UserToken(t.Context(), "other", code); !errors.Is(err, ErrForbidden) {
		t.Fatalf("another app: %v", err)
	}
}

func TestStreamTicketURL(t *testing.T) {
	c, _ := startFlowsTokend(t)
	tk, err := c.StreamTicket(t.Context(), appCRM, []Subscription{{Type: "EVENT", Topic: "*"}}, "svc/1.0")
	if err != nil {
		t.Fatal(err)
	}
	u, err := tk.URL()
	if err != nil || !strings.HasPrefix(u, "ws://") || !strings.HasSuffix(u, "?ticket="+tk.Ticket) {
		t.Fatalf("URL %q, %v", u, err)
	}
	// The ticket opens a connection to the (fake) gateway, as the README shows, once only.
	conn, _, err := websocket.Dial(t.Context(), u, nil)
	if err != nil {
		t.Fatalf("dial the stream endpoint: %v", err)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	if _, _, err := websocket.Dial(t.Context(), u, nil); err == nil {
		t.Fatal("a ticket opened a second connection")
	}
	if _, err := c.StreamTicket(t.Context(), appCRM, nil, ""); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("no subscriptions: %v", err)
	}
}

func TestRobotSend(t *testing.T) {
	c, fake := startFlowsTokend(t)
	msg := json.RawMessage(`{"msgtype":"text","text":{"content":"disk full"}}`)
	for range 20 {
		if err := c.RobotSend(t.Context(), "alerts", msg); err != nil {
			t.Fatal(err)
		}
	}
	var e *Error
	if err := c.RobotSend(t.Context(), "alerts", msg); !errors.Is(err, ErrRateLimited) || !errors.As(err, &e) || e.RetryAfter <= 0 {
		t.Fatalf("21st: %v", err)
	}
	if n := fake.FlowCalls(); n.RobotDelivered != 20 || n.RobotBlocked != 0 {
		t.Fatalf("fake: %+v", n)
	}
	if err := c.RobotSend(t.Context(), "pager", msg); !errors.Is(err, ErrForbidden) {
		t.Fatalf("another robot: %v", err)
	}
}
