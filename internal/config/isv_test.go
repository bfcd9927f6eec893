package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Distinctive callback secrets: the AES key is 43 characters of base64.
const (
	isvAESKey  = "o1w0aum42yaptlz8alnhwikjd3jenzt9cb9wmzptgus"
	isvCBToken = "CbToKeN-5e1d9a"
	isvTicket  = "FiXeDtIcKeT-8c2b7e"
)

var isvFiles = files(map[string]string{
	"/run/secrets/crm":        secretFileValue + "\n",
	"/run/secrets/saas":       secretLiteral + "\n",
	"/run/secrets/saas-cb":    isvCBToken + "\n",
	"/run/secrets/saas-aes":   isvAESKey + "\n",
	"/run/secrets/short-aes":  "abc\n",
	"/run/secrets/nobase-aes": strings.Repeat("*", 43) + "\n",
})

// isvBase is base() plus a third-party app "saas" with every key, a custom app "custom", a
// callback_listen and a client allowed saas's suite tickets only.
func isvBase() map[string]any {
	m := base()
	m["callback_listen"] = "0.0.0.0:8443"
	m["apps"] = append(m["apps"].([]any),
		map[string]any{
			"name":              "saas",
			"type":              "dingtalk_isv",
			"suite_key":         "suitexxxx",
			"suite_secret_file": "/run/secrets/saas",
			"suite_ticket":      "push",
			"callback":          map[string]any{"token_file": "/run/secrets/saas-cb", "aes_key_file": "/run/secrets/saas-aes"},
			"corps":             []any{"dingcorpa", "dingcorpb"},
			"jsapi_ticket":      true,
			"signature_hash":    "sha256",
		},
		map[string]any{
			"name":             "custom",
			"type":             "dingtalk_isv",
			"suite_key":        "customkey",
			"suite_secret_env": "CRM_SECRET",
			"suite_ticket":     isvTicket,
		},
	)
	m["clients"] = append(m["clients"].([]any), map[string]any{
		"name":          "pusher",
		"key_sha256":    "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
		"apps":          []any{},
		"suite_tickets": []any{"saas"},
	})
	return m
}

func parseISV(t *testing.T, m map[string]any) *Config {
	t.Helper()
	cfg, err := Parse(marshal(t, m), testEnv, isvFiles)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func isvProblems(t *testing.T, m map[string]any) []Problem {
	t.Helper()
	cfg, err := Parse(marshal(t, m), testEnv, isvFiles)
	if err == nil {
		t.Fatalf("Parse succeeded: %+v", cfg)
	}
	for _, s := range []string{isvAESKey, isvCBToken, isvTicket, secretLiteral, secretEnvValue} {
		if strings.Contains(err.Error(), s) || strings.Contains(err.Error(), s[:12]) {
			t.Fatalf("problems leak a secret: %v", err)
		}
	}
	return err.(*Error).Problems
}

func TestISVParse(t *testing.T) {
	cfg := parseISV(t, isvBase())
	if cfg.CallbackListen != "0.0.0.0:8443" {
		t.Errorf("CallbackListen = %q", cfg.CallbackListen)
	}
	saas, custom := cfg.Apps[2], cfg.Apps[3]
	want := &ISV{
		SuiteKey:    "suitexxxx",
		SuiteSecret: secretLiteral,
		Callback:    &Callback{Token: isvCBToken, AESKey: isvAESKey},
		Corps:       []string{"dingcorpa", "dingcorpb"},
	}
	if saas.Type != TypeDingTalkISV || !reflect.DeepEqual(saas.ISV, want) {
		t.Errorf("saas = %+v, ISV %+v", saas, saas.ISV)
	}
	if !saas.JSAPITicket || saas.SignatureHash != HashSHA256 || !saas.PushedTickets() {
		t.Errorf("saas jsapi %v hash %q pushed %v", saas.JSAPITicket, saas.SignatureHash, saas.PushedTickets())
	}
	if s := saas.Suite(); s.Key != "suitexxxx" || s.Secret != secretLiteral {
		t.Errorf("Suite() = %+v", s)
	}
	if custom.ISV == nil || custom.ISV.FixedTicket != isvTicket || custom.PushedTickets() || custom.ISV.SuiteSecret != secretEnvValue || custom.ISV.Callback != nil {
		t.Errorf("custom = %+v", custom.ISV)
	}
	if cfg.Apps[0].ISV != nil || cfg.Apps[0].PushedTickets() {
		t.Errorf("internal app has ISV settings")
	}
	pusher := cfg.Clients[len(cfg.Clients)-1]
	if len(pusher.Apps) != 0 || !slices.Equal(pusher.SuiteTickets, []string{"saas"}) {
		t.Errorf("pusher = %+v", pusher)
	}
}

func TestISVDefaults(t *testing.T) {
	m := isvBase()
	delete(app(m, 2), "suite_ticket")
	delete(app(m, 2), "callback")
	delete(m, "callback_listen")
	cfg := parseISV(t, m)
	if a := cfg.Apps[2]; !a.PushedTickets() || a.ISV.Callback != nil || a.SignatureHash != HashSHA256 {
		t.Errorf("saas = %+v %+v", a, a.ISV)
	}
	if cfg.CallbackListen != "" {
		t.Errorf("CallbackListen = %q", cfg.CallbackListen)
	}
}

func TestISVRules(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(m map[string]any)
		want   []string // "path: message piece"
	}{
		{"suite key missing", func(m map[string]any) { delete(app(m, 2), "suite_key") },
			[]string{"apps[2].suite_key: is required"}},
		{"suite secret missing", func(m map[string]any) { delete(app(m, 2), "suite_secret_file") },
			[]string{"apps[2]: one of suite_secret_file, suite_secret_env or suite_secret is required"}},
		{"two suite secrets", func(m map[string]any) { app(m, 2)["suite_secret"] = "x" },
			[]string{"apps[2]: only one of"}},
		{"empty fixed ticket", func(m map[string]any) { app(m, 3)["suite_ticket"] = "" },
			[]string{`apps[3].suite_ticket: must be "push" or the fixed ticket`}},
		{"short aes key", func(m map[string]any) {
			sub(app(m, 2), "callback")["aes_key_file"] = "/run/secrets/short-aes"
		}, []string{"apps[2].callback.aes_key_file: aes key must be 43 characters of base64, not 3 characters"}},
		{"aes key not base64", func(m map[string]any) {
			sub(app(m, 2), "callback")["aes_key_file"] = "/run/secrets/nobase-aes"
		}, []string{"apps[2].callback.aes_key_file: aes key is not valid base64"}},
		{"aes key literal wrong", func(m map[string]any) {
			cb := sub(app(m, 2), "callback")
			delete(cb, "aes_key_file")
			cb["aes_key"] = isvAESKey[:42] + "!"
		}, []string{"apps[2].callback.aes_key: aes key is not valid base64"}},
		{"callback token missing", func(m map[string]any) { delete(sub(app(m, 2), "callback"), "token_file") },
			[]string{"apps[2].callback: one of token_file, token_env or token is required"}},
		{"callback without listener", func(m map[string]any) { delete(m, "callback_listen") },
			[]string{"apps[2].callback: needs callback_listen"}},
		{"callback listener clashes", func(m map[string]any) { m["callback_listen"] = "127.0.0.1:8080" },
			[]string{`callback_listen: "127.0.0.1:8080" must differ from listen`}},
		{"callback listener clashes with the gateway", func(m map[string]any) {
			m["gateway_listen"] = "127.0.0.1:8443"
			m["callback_listen"] = "127.0.0.1:8443"
		}, []string{`callback_listen: "127.0.0.1:8443" must differ from gateway_listen`}},
		{"callback listener bad", func(m map[string]any) { m["callback_listen"] = "nope" },
			[]string{`callback_listen: "nope" must be host:port`}},
		{"bad corp", func(m map[string]any) { app(m, 2)["corps"] = []any{"dingcorpa", "a/b", "dingcorpa"} },
			[]string{`apps[2].corps[1]: "a/b" is not a corp id`, `apps[2].corps[2]: duplicate corp "dingcorpa" (also apps[2].corps[0])`}},
		{"isv with internal keys", func(m map[string]any) {
			a := app(m, 2)
			a["client_id"] = "x"
			a["corp_id"] = "dingx"
			a["agent_id"] = "1"
			a["token_api"] = "v1"
			a["corp_secret"] = "y"
		}, []string{"apps[2].client_id: is not allowed", "apps[2].token_api: is not allowed", "apps[2].corp_id: is not allowed",
			"apps[2].agent_id: is not allowed", "apps[2].corp_secret: is not allowed"}},
		{"internal with isv keys", func(m map[string]any) {
			a := app(m, 0)
			a["suite_key"] = "x"
			a["corps"] = []any{"dingcorpa"}
			a["callback"] = map[string]any{"token": "t", "aes_key": isvAESKey}
		}, []string{"apps[0].suite_key: is only allowed for type dingtalk_isv", "apps[0].callback: is only allowed",
			"apps[0].corps: is only allowed"}},
		{"suite tickets unknown app", func(m map[string]any) { client(m, 1)["suite_tickets"] = []any{"nosuch"} },
			[]string{`clients[1].suite_tickets[0]: unknown app "nosuch"`}},
		{"suite tickets of internal app", func(m map[string]any) { client(m, 1)["suite_tickets"] = []any{"crm"} },
			[]string{`clients[1].suite_tickets[0]: app "crm" is not of type dingtalk_isv`}},
		{"suite tickets of fixed ticket app", func(m map[string]any) { client(m, 1)["suite_tickets"] = []any{"custom"} },
			[]string{`clients[1].suite_tickets[0]: app "custom" has a fixed suite_ticket`}},
		{"suite tickets star not alone", func(m map[string]any) { client(m, 1)["suite_tickets"] = []any{"saas", "*"} },
			[]string{`clients[1].suite_tickets[1]: "*" must be the only entry`}},
		{"suite tickets duplicate", func(m map[string]any) { client(m, 1)["suite_tickets"] = []any{"saas", "saas"} },
			[]string{`clients[1].suite_tickets[1]: duplicate entry "saas"`}},
		{"unknown callback key", func(m map[string]any) { sub(app(m, 2), "callback")["nonce"] = "x" },
			[]string{"apps[2].callback.nonce: line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := isvBase()
			tt.mutate(m)
			ps := isvProblems(t, m)
			var lines []string
			for _, p := range ps {
				lines = append(lines, p.String())
			}
			for _, w := range tt.want {
				if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, w) }) {
					t.Errorf("no problem %q among\n  %s", w, strings.Join(lines, "\n  "))
				}
			}
			if len(ps) != len(tt.want) {
				t.Errorf("%d problems, want %d:\n  %s", len(ps), len(tt.want), strings.Join(lines, "\n  "))
			}
		})
	}
}

func TestISVStarGrantsAll(t *testing.T) {
	m := isvBase()
	client(m, 1)["suite_tickets"] = []any{"*"}
	cfg := parseISV(t, m)
	if got := cfg.Clients[1].SuiteTickets; !slices.Equal(got, []string{"*"}) {
		t.Errorf("SuiteTickets = %v", got)
	}
}
