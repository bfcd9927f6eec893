package dingtalk_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakeclock"
	"github.com/tokend/tokend/internal/fakedingtalk"
)

func startFlowsFake(t *testing.T) (*fakedingtalk.Server, *dingtalk.Client, *fakeclock.Clock) {
	t.Helper()
	clk := fakeclock.New(time.Now())
	fake := fakedingtalk.New(fakedingtalk.Options{Now: clk.Now})
	srv := httptest.NewServer(fake)
	t.Cleanup(func() { fake.Close(); srv.Close() })
	fake.AddApp("dingapp", "app-secret-123")
	return fake, dingtalk.New(dingtalk.Options{APIBase: srv.URL, OAPIBase: srv.URL}), clk
}

func dtError(t *testing.T, err error) *dingtalk.Error {
	t.Helper()
	var de *dingtalk.Error
	if !errors.As(err, &de) {
		t.Fatalf("error %v is not a *dingtalk.Error", err)
	}
	return de
}

func TestUserAccessTokenSingleUse(t *testing.T) {
	fake, c, _ := startFlowsFake(t)
	app := dingtalk.App{Type: dingtalk.Internal, Key: "dingapp", Secret: "app-secret-123"}
	code := fake.MintCode("dingapp", "dingcorp")
	tok, err := c.UserAccessToken(t.Context(), app, dingtalk.UserGrant{Code: code})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.AccessToken, fakedingtalk.UserTokenPrefix) || tok.RefreshToken == "" || tok.ExpiresIn != 7200*time.Second || tok.CorpID != "dingcorp" {
		t.Fatalf("token %+v", tok)
	}
	_, err = c.UserAccessToken(t.Context(), app, dingtalk.UserGrant{Code: code})
	if de := dtError(t, err); de.Status != 400 || de.Family != dingtalk.FamilyNew || strings.Contains(de.Error(), code) {
		t.Fatalf("used code: %v", de)
	}
	tok2, err := c.UserAccessToken(t.Context(), app, dingtalk.UserGrant{RefreshToken: tok.RefreshToken})
	if err != nil || tok2.AccessToken == tok.AccessToken {
		t.Fatalf("refresh: %+v, %v", tok2, err)
	}
	if _, err := c.UserAccessToken(t.Context(), app, dingtalk.UserGrant{RefreshToken: tok.RefreshToken}); dtError(t, err).Status != 400 {
		t.Fatalf("used refresh token: %v", err)
	}
	bad := app
	bad.Secret = "wrong-secret"
	_, err = c.UserAccessToken(t.Context(), bad, dingtalk.UserGrant{Code: fake.MintCode("dingapp", "")})
	if de := dtError(t, err); de.Class != dingtalk.ClassCredentials || strings.Contains(de.Error(), "wrong-secret") {
		t.Fatalf("wrong secret: %v", de)
	}
	if n := fake.FlowCalls(); n.UserToken != 5 || n.UserTokenIssued != 2 {
		t.Fatalf("fake counts %+v", n)
	}
}

func TestOpenConnection(t *testing.T) {
	_, c, _ := startFlowsFake(t)
	app := dingtalk.App{Type: dingtalk.Internal, Key: "dingapp", Secret: "app-secret-123"}
	req := dingtalk.StreamRequest{Subscriptions: []dingtalk.Subscription{{Type: "EVENT", Topic: "*"}}, UA: "svc/1.0"}
	tk, err := c.OpenConnection(t.Context(), app, req)
	if err != nil || !strings.HasPrefix(tk.Endpoint, "ws://") || !strings.HasPrefix(tk.Ticket, fakedingtalk.StreamTicketPrefix) {
		t.Fatalf("ticket %+v, %v", tk, err)
	}
	app.Secret = "nope"
	if _, err := c.OpenConnection(t.Context(), app, req); dtError(t, err).Class != dingtalk.ClassCredentials {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestRobotSendRules(t *testing.T) {
	fake, c, clk := startFlowsFake(t)
	const secret = "SECfakesecret"
	fake.AddRobot("tok-signed", secret)
	fake.AddRobot("tok-plain", "")
	fake.AddRobot("tok-off", "")
	fake.SetRobotDisabled("tok-off", true)
	body := []byte(`{"msgtype":"text","text":{"content":"hi"}}`)
	signed := func(ts time.Time) dingtalk.RobotMessage {
		ms := ts.UnixMilli()
		return dingtalk.RobotMessage{AccessToken: "tok-signed", Timestamp: ms, Sign: sign(secret, ms), Body: body}
	}
	if ans, err := c.RobotSend(t.Context(), signed(clk.Now())); err != nil || !strings.Contains(string(ans), `"errcode":0`) {
		t.Fatalf("signed: %s, %v", ans, err)
	}
	for name, tc := range map[string]struct {
		m    dingtalk.RobotMessage
		code string
	}{
		"bad sign":     {dingtalk.RobotMessage{AccessToken: "tok-signed", Timestamp: clk.Now().UnixMilli(), Sign: "AAAA", Body: body}, "310000"},
		"no sign":      {dingtalk.RobotMessage{AccessToken: "tok-signed", Body: body}, "310000"},
		"old stamp":    {signed(clk.Now().Add(-time.Hour - time.Second)), "310000"},
		"unknown":      {dingtalk.RobotMessage{AccessToken: "tok-unknown", Body: body}, "300001"},
		"disabled":     {dingtalk.RobotMessage{AccessToken: "tok-off", Body: body}, "400013"},
		"not json msg": {dingtalk.RobotMessage{AccessToken: "tok-plain", Body: []byte("hello")}, "40035"},
	} {
		_, err := c.RobotSend(t.Context(), tc.m)
		if de := dtError(t, err); de.Code != tc.code || de.Family != dingtalk.FamilyLegacy || strings.Contains(de.Error(), "tok-") {
			t.Errorf("%s: %v, want %s", name, de, tc.code)
		}
	}
	for i := range fakedingtalk.RobotLimit {
		if _, err := c.RobotSend(t.Context(), dingtalk.RobotMessage{AccessToken: "tok-plain", Body: body}); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
	}
	_, err := c.RobotSend(t.Context(), dingtalk.RobotMessage{AccessToken: "tok-plain", Body: body})
	if dtError(t, err).Code != "410100" {
		t.Fatalf("21st: %v", err)
	}
	clk.Advance(fakedingtalk.RobotBlock - time.Second)
	if _, err := c.RobotSend(t.Context(), dingtalk.RobotMessage{AccessToken: "tok-plain", Body: body}); dtError(t, err).Code != "410100" {
		t.Fatalf("during the block: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := c.RobotSend(t.Context(), dingtalk.RobotMessage{AccessToken: "tok-plain", Body: body}); err != nil {
		t.Fatalf("after the block: %v", err)
	}
	if n := fake.FlowCalls(); n.RobotBlocked != 2 || n.RobotDelivered != 22 {
		t.Fatalf("fake counts %+v", n)
	}
}

// sign is DingTalk's robot signature, written here independently of package robot.
func sign(secret string, ms int64) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(strconv.FormatInt(ms, 10) + "\n" + secret))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
