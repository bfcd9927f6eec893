package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/proxyrule"
)

// devEnv is what -dev runs besides tokend itself: the embedded fake DingTalk.
type devEnv struct {
	cfg     *config.Config
	key     string // the demo client's key
	fakeURL string
	close   func()
}

// startDev starts a FAKE DingTalk on a loopback port and returns a configuration for one demo app
// (with a jsapi ticket) and one client with a fresh key.
func startDev() (*devEnv, error) {
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	const clientID = "dingdemoappkey"
	fake := fakedingtalk.New(fakedingtalk.Options{})
	fake.AddApp(clientID, hex.EncodeToString(secret))
	robotToken, robotSecret := "demo-robot-"+hex.EncodeToString(secret[:8]), "SECdemo"+hex.EncodeToString(secret[8:])
	fake.AddRobot(robotToken, robotSecret) // the demo robot: signed, 20 messages a minute, as DingTalk's
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dev: fake DingTalk: %w", err)
	}
	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 5 * time.Second}
	srv.RegisterOnShutdown(fake.Close) // release any request the fake is holding
	go func() { _ = srv.Serve(ln) }()
	fakeURL := "http://" + ln.Addr().String()

	key, _, err := config.GenerateKey()
	if err != nil {
		srv.Close()
		return nil, err
	}
	cfg := &config.Config{
		Listen:    config.DefaultListen,
		OpsListen: config.DefaultOpsListen,
		Log:       config.Log{Level: "info", Format: "text"},
		Refresh:   config.Refresh{Margin: config.DefaultMargin},
		Upstream:  config.Upstream{Timeout: config.DefaultTimeout, FailureRetry: config.DefaultFailureRetry, MaxRPS: config.DefaultMaxRPS},
		DingTalk:  config.DingTalk{APIBase: fakeURL, OAPIBase: fakeURL},
		Apps: []config.App{{
			Name: "demo", Type: config.TypeDingTalk, ClientID: clientID, ClientSecret: hex.EncodeToString(secret),
			TokenAPI: "v1", JSAPITicket: true, CorpID: "dingdemocorpid", AgentID: "1000001", SignatureHash: "sha1",
		}},
		Proxy: config.Proxy{MaxRPS: config.DefaultProxyMaxRPS, MaxBody: config.DefaultProxyMaxBody, Timeout: config.DefaultProxyTimeout},
		Clients: []config.Client{{Name: "dev", KeySHA256: config.HashKey(key), Apps: []string{"*"},
			UserTokens: []string{"*"}, Streams: []string{"*"}, Robots: []string{"*"},
			Proxy: map[string]proxyrule.Set{"demo": devRules()}}},
		Robots: []config.Robot{{Name: "demo", AccessToken: robotToken, Secret: robotSecret}},
	}
	return &devEnv{cfg: cfg, key: key, fakeURL: fakeURL, close: func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}}, nil
}

// devRules let the demo client proxy every call of the demo app.
func devRules() proxyrule.Set {
	var s proxyrule.Set
	for _, text := range []string{"* api:/**", "* oapi:/**"} {
		r, err := proxyrule.Parse(text)
		if err != nil {
			panic(err) // constant rules
		}
		s = append(s, r)
	}
	return s
}

// announce prints what a new user needs to try the demo.
func (d *devEnv) announce(w io.Writer, listen string) {
	fmt.Fprintf(w, "tokend -dev: FAKE DingTalk at %s and an in-memory store. Not for production.\n", d.fakeURL)
	fmt.Fprintf(w, "client key: %s\n", d.key)
	fmt.Fprintf(w, "try:\n  curl -H 'Authorization: Bearer %s' http://%s/v1/apps/demo/access_token\n", d.key, listen)
	fmt.Fprintf(w, "  curl -H 'Authorization: Bearer %s' -d '{\"msgtype\":\"text\",\"text\":{\"content\":\"hello\"}}' http://%s/v1/robots/demo/send\n", d.key, listen)
	fmt.Fprintf(w, "or call DingTalk (the fake) through the proxy, tokend adding the token:\n  curl -H 'Authorization: Bearer %s' -d '{\"userid\":\"manager\"}' http://%s/v1/apps/demo/proxy/oapi/topapi/v2/user/get\n", d.key, listen)
}
