package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/tokend/tokend/client"
	"github.com/tokend/tokend/internal/broker"
	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/httpapi"
	"github.com/tokend/tokend/internal/proxy"
	"github.com/tokend/tokend/internal/proxyrule"
	"github.com/tokend/tokend/internal/store"
	"github.com/tokend/tokend/internal/token"
)

// This example runs against a real tokend started in-process with a fake DingTalk (see
// startExampleTokend at the end of this file); in production, baseURL is your tokend's address and
// the key comes from a secret store.
func Example() {
	env := startExampleTokend()
	defer env.stop()
	ctx := context.Background()

	// One Client per process: it caches tokens and is safe for concurrent use.
	tc, err := client.New(env.baseURL, env.key, nil)
	if err != nil {
		log.Fatal(err)
	}

	// A token for any DingTalk API. Further calls are answered from the cache.
	tok, err := tc.AccessToken(ctx, "crm")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("token valid for", time.Until(tok.ExpiresAt).Round(time.Hour))

	// Someone resets the app's secret at DingTalk: the token stops working there.
	env.fake.Revoke(tok.Value)

	// Do supplies the token. When DingTalk answers "invalid token", Do reports the token to tokend
	// and runs the call once more with the replacement.
	attempts := 0
	err = tc.Do(ctx, "crm", func(ctx context.Context, accessToken string) error {
		attempts++
		body, err := listDepartments(ctx, env.dingtalkURL, accessToken)
		if err != nil {
			return err
		}
		// Legacy APIs answer HTTP 200 with an errcode; CheckLegacy turns it into an error Do
		// understands. For api.dingtalk.com use client.CheckNew(status, body).
		return client.CheckLegacy(body)
	})
	fmt.Println("attempts:", attempts, "error:", err)

	// Errors carry tokend's problem code.
	_, err = tc.AccessToken(ctx, "nosuch")
	fmt.Println("unknown app:", errors.Is(err, client.ErrAppNotFound))

	// Output:
	// token valid for 2h0m0s
	// attempts: 2 error: <nil>
	// unknown app: true
}

// listDepartments calls a legacy DingTalk API (POST /topapi/v2/department/listsub) and returns its
// body.
func listDepartments(ctx context.Context, base, accessToken string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		base+"/topapi/v2/department/listsub?access_token="+accessToken, bytes.NewReader([]byte(`{"dept_id":1}`)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The URL holds the token: do not let it into the error.
		return nil, errors.New("list departments: request failed")
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// HTTPClient sends code written for DingTalk's own URLs through tokend's proxy: no token, no
// allowlisted egress IP needed. tokend adds the token and recovers from a revoked one by itself.
func ExampleClient_HTTPClient() {
	env := startExampleTokend()
	defer env.stop()
	tc, err := client.New(env.baseURL, env.key, nil)
	if err != nil {
		log.Fatal(err)
	}
	dt := tc.HTTPClient("crm") // the app whose token tokend adds

	// Someone resets the app's secret at DingTalk: tokend's token stops working there.
	tok, _ := tc.AccessToken(context.Background(), "crm")
	env.fake.Revoke(tok.Value)

	resp, err := dt.Post("https://oapi.dingtalk.com/topapi/v2/user/get", "application/json",
		strings.NewReader(`{"userid":"manager"}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Errcode int `json:"errcode"`
		Result  struct {
			Name string `json:"name"`
		} `json:"result"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	fmt.Println(resp.StatusCode, answer.Errcode, answer.Result.Name)

	// Output:
	// 200 0 Fake User manager
}

// A handler serving the dd.config parameters an H5 page asks for. The page sends its own URL;
// accept only your own pages' URLs before signing.
func ExampleClient_Signature() {
	tc, err := client.New("http://127.0.0.1:8080", os.Getenv("TOKEND_KEY"), nil)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ddconfig", func(w http.ResponseWriter, r *http.Request) {
		sig, err := tc.Signature(r.Context(), "crm", r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, "signature unavailable", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// {"agentId":…,"corpId":…,"timeStamp":…,"nonceStr":…,"signature":…}: pass it to dd.config
		// together with jsApiList.
		_ = json.NewEncoder(w).Encode(sig)
	})
	_ = mux
}

// exampleEnv is the in-process tokend the examples use.
type exampleEnv struct {
	baseURL     string // tokend's client API
	key         string // a client key that may use every app
	dingtalkURL string // the fake DingTalk
	fake        *fakedingtalk.Server
	stop        func()
}

// startExampleTokend starts a fake DingTalk with one app, and a tokend (broker, in-memory store, HTTP
// API) serving it as app "crm" on a loopback port. It is what `tokend -dev` runs, minus the process.
func startExampleTokend() *exampleEnv {
	fake := fakedingtalk.New(fakedingtalk.Options{})
	fake.AddApp("dingcrmappkey", "crm-app-secret")
	// The fake serves the token and ticket APIs; this example adds one business API that, like
	// DingTalk's /topapi paths, answers an invalid token with errcode 88 and sub_code "40014".
	dt := http.NewServeMux()
	dt.Handle("/", fake)
	dt.HandleFunc("POST /topapi/v2/department/listsub", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !fake.Valid(token.AccessToken, r.URL.Query().Get("access_token"), time.Now()) {
			fmt.Fprint(w, `{"errcode":88,"errmsg":"ding talk error[subcode=40014,submsg=不合法的access_token]","sub_code":"40014"}`)
			return
		}
		fmt.Fprint(w, `{"errcode":0,"errmsg":"ok","result":[{"dept_id":2,"name":"R&D"}]}`)
	})
	dtSrv := httptest.NewServer(dt)

	warm := make(chan struct{})
	b, err := broker.New(broker.Options{
		Store:    store.NewMemory(store.MemoryOptions{}),
		Upstream: dingtalk.New(dingtalk.Options{APIBase: dtSrv.URL, OAPIBase: dtSrv.URL}),
		Apps: []broker.App{{
			Name:        "crm",
			Cred:        dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "dingcrmappkey", Secret: "crm-app-secret"},
			JSAPITicket: true,
		}},
		Logger: slog.New(&warmHandler{warm: warm}),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.Run(ctx)
	}()
	// Tokens are fetched before tokend serves, as /readyz would tell a load balancer.
	select {
	case <-warm:
	case <-time.After(10 * time.Second):
		log.Fatal("tokend warm-up did not complete")
	}

	key, _, err := config.GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	// The proxy forwards calls to the fake as it would to DingTalk, for the example client's rules.
	px, err := proxy.New(proxy.Options{Tokens: b, APIBase: dtSrv.URL, OAPIBase: dtSrv.URL})
	if err != nil {
		log.Fatal(err)
	}
	var rules proxyrule.Set
	for _, text := range []string{"* api:/**", "* oapi:/**"} {
		r, err := proxyrule.Parse(text)
		if err != nil {
			log.Fatal(err)
		}
		rules = append(rules, r)
	}
	api, err := httpapi.New(httpapi.Options{
		Broker: b,
		Apps: []httpapi.App{{Name: "crm", Type: "dingtalk", JSAPITicket: true,
			CorpID: "dingexamplecorp", AgentID: "1000001"}},
		Clients: []httpapi.Client{{Name: "example", KeySHA256: config.HashKey(key), Apps: []string{"*"},
			Proxy: map[string]proxyrule.Set{"crm": rules}}},
		Proxy: px,
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	return &exampleEnv{baseURL: srv.URL, key: key, dingtalkURL: dtSrv.URL, fake: fake, stop: func() {
		srv.Close()
		cancel()
		<-done
		fake.Close()
		dtSrv.Close()
	}}
}

// warmHandler is a slog.Handler that drops every record and closes warm when the broker logs that
// its warm-up is complete.
type warmHandler struct{ warm chan struct{} }

func (h *warmHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *warmHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *warmHandler) WithGroup(string) slog.Handler            { return h }
func (h *warmHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "warm-up complete" {
		close(h.warm)
	}
	return nil
}
