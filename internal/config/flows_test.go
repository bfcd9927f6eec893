package config

import (
	"slices"
	"strings"
	"testing"
)

func withFlows(m map[string]any) map[string]any {
	m["robots"] = []any{
		map[string]any{"name": "alerts", "access_token_env": "CRM_SECRET", "secret_file": "/run/secrets/crm"},
		map[string]any{"name": "ops-feed", "access_token": secretLiteral},
	}
	c := client(m, 0)
	c["user_tokens"] = []any{"crm"}
	c["streams"] = []any{"*"}
	c["robots"] = []any{"alerts"}
	m["clients"] = append(m["clients"].([]any), map[string]any{
		"name": "alerter", "key_sha256": hashB, "apps": []any{}, "robots": []any{"*"}})
	return m
}

func TestParseFlows(t *testing.T) {
	cfg, err := Parse(marshal(t, withFlows(base())), testEnv, testFiles)
	if err != nil {
		t.Fatal(err)
	}
	want := []Robot{{Name: "alerts", AccessToken: secretEnvValue, Secret: secretFileValue}, {Name: "ops-feed", AccessToken: secretLiteral}}
	if !slices.Equal(cfg.Robots, want) {
		t.Fatalf("robots = %+v", cfg.Robots)
	}
	billing, alerter := cfg.Clients[0], cfg.Clients[1]
	if !Allowed(billing.UserTokens, "crm") || Allowed(billing.UserTokens, "oldorg") || !Allowed(billing.Streams, "oldorg") ||
		!Allowed(billing.Robots, "alerts") || Allowed(billing.Robots, "ops-feed") {
		t.Fatalf("billing: %+v", billing)
	}
	if len(alerter.Apps) != 0 || !Allowed(alerter.Robots, "ops-feed") || Allowed(alerter.UserTokens, "crm") || Allowed(alerter.Streams, "crm") {
		t.Fatalf("alerter: %+v", alerter)
	}
}

func TestFlowsProblems(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(m map[string]any)
		path string
		msg  string
	}{
		"unknown robot": {func(m map[string]any) { client(m, 0)["robots"] = []any{"alerts", "pager"} },
			"clients[0].robots[1]", `unknown robot "pager"`},
		"unknown app": {func(m map[string]any) { client(m, 0)["user_tokens"] = []any{"hr"} },
			"clients[0].user_tokens[0]", `unknown app "hr"`},
		"unknown stream app": {func(m map[string]any) { client(m, 0)["streams"] = []any{"crm", "hr"} },
			"clients[0].streams[1]", `unknown app "hr"`},
		"star and more": {func(m map[string]any) { client(m, 0)["robots"] = []any{"*", "alerts"} },
			"clients[0].robots[0]", `"*" must be the only entry`},
		"no token": {func(m map[string]any) { delete(robotAt(m, 1), "access_token") },
			"robots[1]", "one of access_token_file, access_token_env or access_token is required"},
		"two tokens": {func(m map[string]any) { robotAt(m, 1)["access_token_env"] = "CRM_SECRET" },
			"robots[1]", "only one of"},
		"two secrets": {func(m map[string]any) { robotAt(m, 0)["secret"] = secretLiteral },
			"robots[0]", "only one of secret_file, secret_env or secret may be set"},
		"missing token file": {func(m map[string]any) {
			delete(robotAt(m, 1), "access_token")
			robotAt(m, 1)["access_token_file"] = "/run/secrets/none"
		}, "robots[1].access_token_file", "does not exist"},
		"bad name": {func(m map[string]any) { robotAt(m, 0)["name"] = "Alerts!" },
			"robots[0].name", `"Alerts!" must match`},
		"duplicate name": {func(m map[string]any) { robotAt(m, 1)["name"] = "alerts" },
			"robots[1].name", `duplicate robot name "alerts"`},
		"same webhook": {func(m map[string]any) {
			delete(robotAt(m, 1), "access_token")
			robotAt(m, 1)["access_token_env"] = "CRM_SECRET"
		}, "robots[1]", "same webhook access token as robots[0]"},
		"unknown key": {func(m map[string]any) { robotAt(m, 0)["webhook"] = "x" },
			"robots[0].webhook", "unknown key"},
		"no permissions at all": {func(m map[string]any) { delete(client(m, 1), "robots") },
			"clients[1].apps", "must list at least one app"},
	} {
		t.Run(name, func(t *testing.T) {
			m := withFlows(base())
			tc.edit(m)
			ps := problems(t, marshal(t, m))
			for _, p := range ps {
				if p.Path == tc.path && strings.Contains(p.Message, tc.msg) {
					return
				}
			}
			t.Fatalf("problems %v, want %s: …%s…", ps, tc.path, tc.msg)
		})
	}
}

func robotAt(m map[string]any, i int) map[string]any { return m["robots"].([]any)[i].(map[string]any) }
