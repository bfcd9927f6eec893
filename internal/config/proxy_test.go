package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/proxyrule"
)

func TestProxyConfig(t *testing.T) {
	m := base()
	m["gateway_listen"] = "127.0.0.1:8443"
	m["proxy"] = map[string]any{"max_rps": 400, "max_body": "1MiB", "timeout": "5s"}
	m["clients"] = append(m["clients"].([]any), map[string]any{
		"name": "svc", "key_sha256": hashB, "apps": []any{},
		"proxy": map[string]any{"crm": []any{"POST oapi:/topapi/v2/user/get", "* api:/v1.0/robot/**"}},
	})
	cfg, err := Parse(marshal(t, m), testEnv, testFiles)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.GatewayListen != "127.0.0.1:8443" || cfg.Proxy != (Proxy{MaxRPS: 400, MaxBody: 1 << 20, Timeout: 5 * time.Second}) {
		t.Errorf("proxy section read as %+v, gateway %q", cfg.Proxy, cfg.GatewayListen)
	}
	svc := cfg.Clients[1]
	if len(svc.Apps) != 0 || slices.Contains(svc.Apps, "crm") {
		t.Errorf("a proxy-only client may use raw tokens: %v", svc.Apps)
	}
	crm := svc.Proxy["crm"]
	if len(crm) != 2 || !crm.Allows("POST", proxyrule.OAPI, []string{"topapi", "v2", "user", "get"}) ||
		crm.Allows("GET", proxyrule.OAPI, []string{"topapi", "v2", "user", "get"}) {
		t.Errorf("rules read as %+v", crm)
	}
	if cfg.Clients[0].Proxy != nil {
		t.Errorf("a client without proxy rules has %v", cfg.Clients[0].Proxy)
	}
}

func TestProxyConfigProblems(t *testing.T) {
	withClient := func(extra map[string]any) func(m map[string]any) {
		return func(m map[string]any) {
			for k, v := range extra {
				client(m, 0)[k] = v
			}
		}
	}
	cases := []struct {
		name   string
		mutate func(m map[string]any)
		want   []string
		text   string // in the message of the first problem
	}{
		{"bad rule", withClient(map[string]any{"proxy": map[string]any{"crm": []any{"POST oapi:/x", "GET foo"}}}),
			[]string{"clients[0].proxy.crm[1]"}, `"GET foo" is not "<METHOD|*> <api|oapi>:<path>"`},
		{"unknown app", withClient(map[string]any{"proxy": map[string]any{"nope": []any{"GET api:/x"}}}),
			[]string{"clients[0].proxy.nope"}, `unknown app "nope"`},
		{"empty rule list", withClient(map[string]any{"proxy": map[string]any{"crm": []any{}}}),
			[]string{"clients[0].proxy.crm"}, "at least one rule"},
		{"no apps and no proxy", withClient(map[string]any{"apps": []any{}}), []string{"clients[0].apps"}, "at least one app"},
		{"proxy not a mapping", withClient(map[string]any{"proxy": []any{"GET api:/x"}}), []string{"clients[0].proxy"}, "must be a mapping"},
		{"rule not a string list", withClient(map[string]any{"proxy": map[string]any{"crm": "GET api:/x"}}), []string{"clients[0].proxy.crm"}, "must be a list"},
		{"budgets too large", func(m map[string]any) { m["proxy"] = map[string]any{"max_rps": 401} },
			[]string{"proxy.max_rps"}, "upstream.max_rps (50) + proxy.max_rps (401) = 451 must not exceed 450"},
		{"default budget too large with upstream's", func(m map[string]any) { sub(m, "upstream")["max_rps"] = 200 },
			[]string{"proxy.max_rps"}, "upstream.max_rps (200) + proxy.max_rps (300)"},
		{"max_rps fractional", func(m map[string]any) { m["proxy"] = map[string]any{"max_rps": 1.5} }, []string{"proxy.max_rps"}, "whole number"},
		{"max_rps zero", func(m map[string]any) { m["proxy"] = map[string]any{"max_rps": 0} }, []string{"proxy.max_rps"}, "whole number"},
		{"max_body unit", func(m map[string]any) { m["proxy"] = map[string]any{"max_body": "20 parsecs"} }, []string{"proxy.max_body"}, `"20 parsecs"`},
		{"max_body zero", func(m map[string]any) { m["proxy"] = map[string]any{"max_body": "0"} }, []string{"proxy.max_body"}, "from 1 byte"},
		{"max_body huge", func(m map[string]any) { m["proxy"] = map[string]any{"max_body": "2GiB"} }, []string{"proxy.max_body"}, "1GiB"},
		{"timeout", func(m map[string]any) { m["proxy"] = map[string]any{"timeout": "1h"} }, []string{"proxy.timeout"}, "at most"},
		{"unknown key", func(m map[string]any) { m["proxy"] = map[string]any{"max_rpm": 1} }, []string{"proxy.max_rpm"}, "unknown key"},
		{"gateway not host:port", func(m map[string]any) { m["gateway_listen"] = "8443" }, []string{"gateway_listen"}, "host:port"},
		{"gateway equals listen", func(m map[string]any) { m["gateway_listen"] = "127.0.0.1:8080" }, []string{"gateway_listen"}, "listen"},
		{"gateway on ops wildcard", func(m map[string]any) { m["gateway_listen"] = ":9090" }, []string{"gateway_listen"}, "ops_listen"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := base()
			c.mutate(m)
			ps := problems(t, marshal(t, m))
			if got := paths(ps); !slices.Equal(got, c.want) {
				t.Fatalf("problems at %v, want %v: %v", got, c.want, ps)
			}
			if !strings.Contains(ps[0].Message, c.text) {
				t.Errorf("message %q does not contain %q", ps[0].Message, c.text)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	ok := map[string]int64{"20MiB": 20 << 20, "512KiB": 512 << 10, "1048576": 1 << 20, "1GiB": 1 << 30, "3MB": 3e6, "7B": 7, "2 KiB": 2048}
	for in, want := range ok {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "1.5MiB", "20mib", "20 MiB MiB", "9999999999999"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}
