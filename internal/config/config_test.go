package config

import (
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokend/tokend/internal/dingtalk"
)

// Distinctive secret values: no error message may contain any of them, or any 6-character piece.
const (
	secretFileValue = "SeCrEtFiLe-7f3a9c1d2e"
	secretEnvValue  = "SeCrEtEnV-4b8e0a6f5c"
	secretLiteral   = "SeCrEtLiT-9d2c7b1a0e"
	secretCorp      = "SeCrEtCoRp-3e5f8a2b6d"
	secretRedisPw   = "SeCrEtReDiS-1a2b3c4d5e"
)

var allSecrets = []string{secretFileValue, secretEnvValue, secretLiteral, secretCorp, secretRedisPw}

const hashA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" // sha256("test")
const hashB = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752" // sha256("test2")

// env is a fake environment.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// files is a fake file system for secret files.
func files(m map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		v, ok := m[name]
		if !ok {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		return []byte(v), nil
	}
}

var (
	testEnv = env(map[string]string{
		"CRM_SECRET":    secretEnvValue,
		"OLDORG_SECRET": secretCorp,
		"EMPTY":         "",
		"CONTROL":       secretEnvValue + "\x01",
	})
	testFiles = files(map[string]string{
		"/run/secrets/crm":       secretFileValue + "\n",
		"/run/secrets/redis":     secretRedisPw + "\r\n",
		"/run/secrets/empty":     " \n",
		"/run/secrets/multiline": secretFileValue + "\n" + secretLiteral + "\n",
	})
)

// base returns a valid configuration as a generic tree that cases mutate before marshalling.
func base() map[string]any {
	return map[string]any{
		"listen":     "127.0.0.1:8080",
		"ops_listen": "127.0.0.1:9090",
		"log":        map[string]any{"level": "info", "format": "json"},
		"store": map[string]any{"redis": map[string]any{
			"url":        "redis://127.0.0.1:6379/0",
			"key_prefix": "tokend",
		}},
		"refresh":  map[string]any{"margin": "10m"},
		"upstream": map[string]any{"timeout": "10s", "failure_retry": "30s", "max_rps": 50},
		"dingtalk": map[string]any{"api_base": "https://api.dingtalk.com", "oapi_base": "https://oapi.dingtalk.com"},
		"apps": []any{
			map[string]any{
				"name":              "crm",
				"type":              "dingtalk",
				"client_id":         "dingxxxxxxxx",
				"client_secret_env": "CRM_SECRET",
				"token_api":         "v1",
				"jsapi_ticket":      true,
				"corp_id":           "dingcorpxxxx",
				"agent_id":          "310804070",
				"signature_hash":    "sha1",
			},
			map[string]any{
				"name":            "oldorg",
				"type":            "dingtalk_corp",
				"corp_id":         "dingyyyy",
				"corp_secret_env": "OLDORG_SECRET",
			},
		},
		"clients": []any{
			map[string]any{"name": "billing", "key_sha256": hashA, "apps": []any{"crm"}},
		},
	}
}

func sub(m map[string]any, key string) map[string]any { return m[key].(map[string]any) }

func app(m map[string]any, i int) map[string]any { return m["apps"].([]any)[i].(map[string]any) }

func client(m map[string]any, i int) map[string]any { return m["clients"].([]any)[i].(map[string]any) }

func marshal(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// problems parses data and returns the problems, failing the test if parsing succeeded or returned
// anything but a *Error. It also checks that no secret leaks into the message.
func problems(t *testing.T, data []byte) []Problem {
	t.Helper()
	cfg, err := Parse(data, testEnv, testFiles)
	if err == nil {
		t.Fatalf("Parse succeeded, want an error; config: %+v", cfg)
	}
	if cfg != nil {
		t.Errorf("Parse returned a config with an error")
	}
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("error is %T, want *config.Error: %v", err, err)
	}
	if got, want := strings.Count(err.Error(), "\n")+1, len(cerr.Problems); got != want {
		t.Errorf("Error() has %d lines for %d problems", got, want)
	}
	assertNoSecrets(t, err.Error())
	return cerr.Problems
}

func assertNoSecrets(t *testing.T, s string) {
	t.Helper()
	for _, secret := range allSecrets {
		for i := 0; i+6 <= len(secret); i++ {
			if piece := secret[i : i+6]; strings.Contains(s, piece) {
				t.Fatalf("output contains a piece of a secret (%q)", piece)
			}
		}
	}
}

func paths(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Path
	}
	return out
}

func TestParseFull(t *testing.T) {
	m := base()
	app(m, 0)["client_secret_file"] = "/run/secrets/crm"
	delete(app(m, 0), "client_secret_env")
	app(m, 0)["token_api"] = "legacy"
	app(m, 0)["signature_hash"] = "sha256"
	sub(sub(m, "store"), "redis")["password_file"] = "/run/secrets/redis"
	sub(sub(m, "store"), "redis")["key_prefix"] = "tk:prod"
	m["listen"] = ":8443"
	m["ops_listen"] = "10.0.0.1:9443"
	m["log"] = map[string]any{"level": "debug", "format": "text"}
	m["refresh"] = map[string]any{"margin": "5m"}
	m["upstream"] = map[string]any{"timeout": "3s", "failure_retry": "1m", "max_rps": 12.5}
	m["dingtalk"] = map[string]any{"api_base": "http://127.0.0.1:8001/", "oapi_base": "https://oapi.example:8443"}
	m["apps"] = append(m["apps"].([]any), map[string]any{
		"name": "lit_app-2", "type": "dingtalk", "client_id": "k3", "client_secret": secretLiteral,
	})
	m["clients"] = append(m["clients"].([]any), map[string]any{"name": "ops", "key_sha256": strings.ToUpper(hashB), "apps": []any{"*"}})

	cfg, err := Parse(marshal(t, m), testEnv, testFiles)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Listen:    ":8443",
		OpsListen: "10.0.0.1:9443",
		Log:       Log{Level: "debug", Format: "text"},
		Store: Store{Redis: &Redis{
			URL:       "redis://127.0.0.1:6379/0",
			Password:  secretRedisPw,
			KeyPrefix: "tk:prod",
		}},
		Refresh:  Refresh{Margin: 5 * time.Minute},
		Upstream: Upstream{Timeout: 3 * time.Second, FailureRetry: time.Minute, MaxRPS: 12.5},
		DingTalk: DingTalk{APIBase: "http://127.0.0.1:8001", OAPIBase: "https://oapi.example:8443"},
		Apps: []App{
			{
				Name: "crm", Type: TypeDingTalk, ClientID: "dingxxxxxxxx", ClientSecret: secretFileValue,
				TokenAPI: "legacy", JSAPITicket: true, CorpID: "dingcorpxxxx", AgentID: "310804070",
				SignatureHash: "sha256",
			},
			{
				Name: "oldorg", Type: TypeDingTalkCorp, TokenAPI: "legacy", CorpID: "dingyyyy",
				SignatureHash: "sha1", CorpSecret: secretCorp,
			},
			{
				Name: "lit_app-2", Type: TypeDingTalk, ClientID: "k3", ClientSecret: secretLiteral,
				TokenAPI: "v1", SignatureHash: "sha1",
			},
		},
		Proxy: Proxy{MaxRPS: DefaultProxyMaxRPS, MaxBody: DefaultProxyMaxBody, Timeout: DefaultProxyTimeout},
		Clients: []Client{
			{Name: "billing", KeySHA256: mustHash(t, hashA), Apps: []string{"crm"}},
			{Name: "ops", KeySHA256: mustHash(t, hashB), Apps: []string{"*"}},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		// Do not print the configs: they hold secrets.
		t.Errorf("Parse returned a different config")
		compareFields(t, reflect.ValueOf(*cfg), reflect.ValueOf(*want), "")
	}
}

// compareFields reports which fields differ, without printing values.
func compareFields(t *testing.T, got, want reflect.Value, path string) {
	t.Helper()
	switch got.Kind() {
	case reflect.Struct:
		for i := range got.NumField() {
			compareFields(t, got.Field(i), want.Field(i), path+"."+got.Type().Field(i).Name)
		}
	case reflect.Pointer:
		if got.IsNil() != want.IsNil() {
			t.Errorf("%s: nil mismatch", path)
		} else if !got.IsNil() {
			compareFields(t, got.Elem(), want.Elem(), path)
		}
	case reflect.Slice:
		if got.Len() != want.Len() {
			t.Errorf("%s: length %d, want %d", path, got.Len(), want.Len())
			return
		}
		for i := range got.Len() {
			compareFields(t, got.Index(i), want.Index(i), path+"["+string(rune('0'+i))+"]")
		}
	default:
		if !reflect.DeepEqual(got.Interface(), want.Interface()) {
			t.Errorf("%s differs", path)
		}
	}
}

func mustHash(t *testing.T, s string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad test hash %q", s)
	}
	return [32]byte(b)
}

func TestDefaults(t *testing.T) {
	data := []byte(`
apps:
  - name: crm
    type: dingtalk
    client_id: k
    client_secret: ` + secretLiteral + `
`)
	cfg, err := Parse(data, testEnv, testFiles)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Listen:    "127.0.0.1:8080",
		OpsListen: "127.0.0.1:9090",
		Log:       Log{Level: "info", Format: "json"},
		Refresh:   Refresh{Margin: 10 * time.Minute},
		Upstream:  Upstream{Timeout: 10 * time.Second, FailureRetry: 30 * time.Second, MaxRPS: 50},
		DingTalk:  DingTalk{APIBase: "https://api.dingtalk.com", OAPIBase: "https://oapi.dingtalk.com"},
		Proxy:     Proxy{MaxRPS: 300, MaxBody: 20 << 20, Timeout: 30 * time.Second},
		Apps: []App{{
			Name: "crm", Type: "dingtalk", ClientID: "k", ClientSecret: secretLiteral,
			TokenAPI: "v1", SignatureHash: "sha1",
		}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults differ")
		compareFields(t, reflect.ValueOf(*cfg), reflect.ValueOf(*want), "")
	}

	// An empty redis mapping still selects Redis, with the default key prefix (and a missing url).
	ps := problems(t, []byte(string(data)+"store:\n  redis: {}\n"))
	if got := paths(ps); !slices.Equal(got, []string{"store.redis"}) {
		t.Errorf("problems at %v, want [store.redis]", got)
	}
	cfg, err = Parse([]byte(string(data)+"store:\n  redis:\n    addrs: [a:1]\n"), testEnv, testFiles)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Store.Redis == nil || cfg.Store.Redis.KeyPrefix != "tokend" {
		t.Errorf("redis key prefix default not applied")
	}
}

func TestRules(t *testing.T) {
	redis := func(m map[string]any) map[string]any { return sub(sub(m, "store"), "redis") }
	cases := []struct {
		name   string
		mutate func(m map[string]any)
		want   []string // problem paths, in order
	}{
		{"listen not host:port", func(m map[string]any) { m["listen"] = "8080" }, []string{"listen"}},
		{"listen bad port", func(m map[string]any) { m["listen"] = "127.0.0.1:http" }, []string{"listen"}},
		{"listen port out of range", func(m map[string]any) { m["listen"] = "127.0.0.1:70000" }, []string{"listen"}},
		{"ops_listen not host:port", func(m map[string]any) { m["ops_listen"] = "localhost" }, []string{"ops_listen"}},
		{"listeners equal", func(m map[string]any) { m["ops_listen"] = "127.0.0.1:8080" }, []string{"ops_listen"}},
		{"listeners overlap on wildcard", func(m map[string]any) { m["ops_listen"] = ":8080" }, []string{"ops_listen"}},
		{"log level", func(m map[string]any) { sub(m, "log")["level"] = "verbose" }, []string{"log.level"}},
		{"log format", func(m map[string]any) { sub(m, "log")["format"] = "xml" }, []string{"log.format"}},
		{"redis url and addrs", func(m map[string]any) { redis(m)["addrs"] = []any{"h:1"} }, []string{"store.redis"}},
		{"redis neither url nor addrs", func(m map[string]any) { delete(redis(m), "url") }, []string{"store.redis"}},
		{"redis url scheme", func(m map[string]any) { redis(m)["url"] = "http://127.0.0.1:6379" }, []string{"store.redis.url"}},
		{"redis url unparsable", func(m map[string]any) { redis(m)["url"] = "redis://[::1" }, []string{"store.redis.url"}},
		{"redis url no host", func(m map[string]any) { redis(m)["url"] = "redis:///0" }, []string{"store.redis.url"}},
		{"redis url bad db", func(m map[string]any) { redis(m)["url"] = "redis://h:6379/x" }, []string{"store.redis.url"}},
		{"redis url bad port", func(m map[string]any) { redis(m)["url"] = "redis://h:0/1" }, []string{"store.redis.url"}},
		{"redis master_name without addrs", func(m map[string]any) { redis(m)["master_name"] = "mymaster" }, []string{"store.redis.master_name"}},
		{"redis addr not host:port", func(m map[string]any) {
			delete(redis(m), "url")
			redis(m)["addrs"] = []any{"h1:7000", "h2"}
		}, []string{"store.redis.addrs[1]"}},
		{"redis addr duplicate", func(m map[string]any) {
			delete(redis(m), "url")
			redis(m)["addrs"] = []any{"h1:7000", "h1:7000"}
		}, []string{"store.redis.addrs[1]"}},
		{"redis password_file missing", func(m map[string]any) { redis(m)["password_file"] = "/nope" }, []string{"store.redis.password_file"}},
		{"redis password_file empty", func(m map[string]any) { redis(m)["password_file"] = "/run/secrets/empty" }, []string{"store.redis.password_file"}},
		{"redis password_file and url password", func(m map[string]any) {
			redis(m)["url"] = "redis://:" + secretRedisPw + "@h:6379/0"
			redis(m)["password_file"] = "/run/secrets/redis"
		}, []string{"store.redis.password_file"}},
		{"redis key_prefix", func(m map[string]any) { redis(m)["key_prefix"] = "{tokend}" }, []string{"store.redis.key_prefix"}},
		{"margin zero", func(m map[string]any) { sub(m, "refresh")["margin"] = "0s" }, []string{"refresh.margin"}},
		{"margin 2h", func(m map[string]any) { sub(m, "refresh")["margin"] = "2h" }, []string{"refresh.margin"}},
		{"margin not a duration", func(m map[string]any) { sub(m, "refresh")["margin"] = "600" }, []string{"refresh.margin"}},
		{"timeout zero", func(m map[string]any) { sub(m, "upstream")["timeout"] = "0s" }, []string{"upstream.timeout"}},
		{"timeout over 60s", func(m map[string]any) { sub(m, "upstream")["timeout"] = "61s" }, []string{"upstream.timeout"}},
		{"timeout bad", func(m map[string]any) { sub(m, "upstream")["timeout"] = "ten seconds" }, []string{"upstream.timeout"}},
		{"failure_retry under 1s", func(m map[string]any) { sub(m, "upstream")["failure_retry"] = "999ms" }, []string{"upstream.failure_retry"}},
		{"max_rps zero", func(m map[string]any) { sub(m, "upstream")["max_rps"] = 0 }, []string{"upstream.max_rps"}},
		{"max_rps negative", func(m map[string]any) { sub(m, "upstream")["max_rps"] = -1 }, []string{"upstream.max_rps"}},
		{"max_rps over the ban threshold", func(m map[string]any) { sub(m, "upstream")["max_rps"] = 501 }, []string{"upstream.max_rps"}},
		{"api_base relative", func(m map[string]any) { sub(m, "dingtalk")["api_base"] = "api.dingtalk.com" }, []string{"dingtalk.api_base"}},
		{"api_base scheme", func(m map[string]any) { sub(m, "dingtalk")["api_base"] = "ftp://api.dingtalk.com" }, []string{"dingtalk.api_base"}},
		{"api_base path", func(m map[string]any) { sub(m, "dingtalk")["api_base"] = "https://api.dingtalk.com/v1.0" }, []string{"dingtalk.api_base"}},
		{"oapi_base query", func(m map[string]any) { sub(m, "dingtalk")["oapi_base"] = "https://oapi.dingtalk.com?x=1" }, []string{"dingtalk.oapi_base"}},
		{"oapi_base fragment", func(m map[string]any) { sub(m, "dingtalk")["oapi_base"] = "https://oapi.dingtalk.com#x" }, []string{"dingtalk.oapi_base"}},
		{"no apps", func(m map[string]any) { m["apps"] = []any{}; m["clients"] = []any{} }, []string{"apps"}},
		{"app name missing", func(m map[string]any) { delete(app(m, 1), "name") }, []string{"apps[1].name"}},
		{"app name upper case", func(m map[string]any) { app(m, 1)["name"] = "OldOrg" }, []string{"apps[1].name"}},
		{"app name too long", func(m map[string]any) { app(m, 1)["name"] = strings.Repeat("a", 65) }, []string{"apps[1].name"}},
		{"app name duplicate", func(m map[string]any) { app(m, 1)["name"] = "crm" }, []string{"apps[1].name"}},
		{"app type missing", func(m map[string]any) { delete(app(m, 1), "type") }, []string{"apps[1].type"}},
		{"app type unknown", func(m map[string]any) { app(m, 1)["type"] = "isv" }, []string{"apps[1].type"}},
		{"dingtalk client_id missing", func(m map[string]any) { delete(app(m, 0), "client_id") }, []string{"apps[0].client_id"}},
		{"dingtalk no secret", func(m map[string]any) { delete(app(m, 0), "client_secret_env") }, []string{"apps[0]"}},
		{"dingtalk two secrets", func(m map[string]any) { app(m, 0)["client_secret"] = secretLiteral }, []string{"apps[0]"}},
		{"dingtalk secret file missing", func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret_file"] = "/run/secrets/none"
		}, []string{"apps[0].client_secret_file"}},
		{"dingtalk secret file empty", func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret_file"] = "/run/secrets/empty"
		}, []string{"apps[0].client_secret_file"}},
		{"dingtalk secret file path empty", func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret_file"] = ""
		}, []string{"apps[0].client_secret_file"}},
		{"dingtalk secret file two lines", func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret_file"] = "/run/secrets/multiline"
		}, []string{"apps[0].client_secret_file"}},
		{"dingtalk secret env unset", func(m map[string]any) { app(m, 0)["client_secret_env"] = "UNSET" }, []string{"apps[0].client_secret_env"}},
		{"dingtalk secret env empty", func(m map[string]any) { app(m, 0)["client_secret_env"] = "EMPTY" }, []string{"apps[0].client_secret_env"}},
		{"dingtalk secret env control", func(m map[string]any) { app(m, 0)["client_secret_env"] = "CONTROL" }, []string{"apps[0].client_secret_env"}},
		{"dingtalk secret env bad name", func(m map[string]any) { app(m, 0)["client_secret_env"] = "CRM-SECRET" }, []string{"apps[0].client_secret_env"}},
		{"dingtalk secret literal empty", func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret"] = ""
		}, []string{"apps[0].client_secret"}},
		{"dingtalk token_api", func(m map[string]any) { app(m, 0)["token_api"] = "v2" }, []string{"apps[0].token_api"}},
		{"dingtalk corp secret not allowed", func(m map[string]any) { app(m, 0)["corp_secret_env"] = "OLDORG_SECRET" }, []string{"apps[0].corp_secret_env"}},
		{"corp corp_id missing", func(m map[string]any) { delete(app(m, 1), "corp_id") }, []string{"apps[1].corp_id"}},
		{"corp no secret", func(m map[string]any) { delete(app(m, 1), "corp_secret_env") }, []string{"apps[1]"}},
		{"corp two secrets", func(m map[string]any) { app(m, 1)["corp_secret_file"] = "/run/secrets/crm" }, []string{"apps[1]"}},
		{"corp client_id not allowed", func(m map[string]any) { app(m, 1)["client_id"] = "k" }, []string{"apps[1].client_id"}},
		{"corp client secret not allowed", func(m map[string]any) { app(m, 1)["client_secret"] = secretLiteral }, []string{"apps[1].client_secret"}},
		{"corp token_api v1", func(m map[string]any) { app(m, 1)["token_api"] = "v1" }, []string{"apps[1].token_api"}},
		{"jsapi without corp_id", func(m map[string]any) { delete(app(m, 0), "corp_id") }, []string{"apps[0].corp_id"}},
		{"jsapi without agent_id", func(m map[string]any) { delete(app(m, 0), "agent_id") }, []string{"apps[0].agent_id"}},
		{"corp jsapi without corp_id reported once", func(m map[string]any) {
			delete(app(m, 1), "corp_id")
			app(m, 1)["jsapi_ticket"] = true
			app(m, 1)["agent_id"] = "1"
		}, []string{"apps[1].corp_id"}},
		{"agent_id not digits", func(m map[string]any) { app(m, 0)["agent_id"] = "abc" }, []string{"apps[0].agent_id"}},
		{"signature_hash", func(m map[string]any) { app(m, 0)["signature_hash"] = "md5" }, []string{"apps[0].signature_hash"}},
		{"client name missing", func(m map[string]any) { delete(client(m, 0), "name") }, []string{"clients[0].name"}},
		{"client name duplicate", func(m map[string]any) {
			m["clients"] = append(m["clients"].([]any), map[string]any{"name": "billing", "key_sha256": hashB, "apps": []any{"crm"}})
		}, []string{"clients[1].name"}},
		{"key_sha256 missing", func(m map[string]any) { delete(client(m, 0), "key_sha256") }, []string{"clients[0].key_sha256"}},
		{"key_sha256 short", func(m map[string]any) { client(m, 0)["key_sha256"] = hashA[:63] }, []string{"clients[0].key_sha256"}},
		{"key_sha256 not hex", func(m map[string]any) { client(m, 0)["key_sha256"] = "z" + hashA[1:] }, []string{"clients[0].key_sha256"}},
		{"key_sha256 of empty key", func(m map[string]any) {
			client(m, 0)["key_sha256"] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		}, []string{"clients[0].key_sha256"}},
		{"key_sha256 duplicate", func(m map[string]any) {
			m["clients"] = append(m["clients"].([]any), map[string]any{"name": "b2", "key_sha256": strings.ToUpper(hashA), "apps": []any{"crm"}})
		}, []string{"clients[1].key_sha256"}},
		{"client apps missing", func(m map[string]any) { delete(client(m, 0), "apps") }, []string{"clients[0].apps"}},
		{"client app unknown", func(m map[string]any) { client(m, 0)["apps"] = []any{"crm", "nope"} }, []string{"clients[0].apps[1]"}},
		{"client app empty", func(m map[string]any) { client(m, 0)["apps"] = []any{""} }, []string{"clients[0].apps[0]"}},
		{"client app duplicate", func(m map[string]any) { client(m, 0)["apps"] = []any{"crm", "crm"} }, []string{"clients[0].apps[1]"}},
		{"client star not alone", func(m map[string]any) { client(m, 0)["apps"] = []any{"crm", "*"} }, []string{"clients[0].apps[1]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.mutate(m)
			ps := problems(t, marshal(t, m))
			if got := paths(ps); !slices.Equal(got, tc.want) {
				t.Errorf("problems at %v, want %v; messages:\n%v", got, tc.want, (&Error{ps}).Error())
			}
			for _, p := range ps {
				if p.Message == "" {
					t.Errorf("%s: empty message", p.Path)
				}
			}
		})
	}
}

func TestBaseValid(t *testing.T) {
	// The rules above are only meaningful if the base they mutate is valid.
	if _, err := Parse(marshal(t, base()), testEnv, testFiles); err != nil {
		t.Fatalf("base config invalid: %v", err)
	}
	// Port 0 on both listeners is fine: the kernel picks two free ports.
	m := base()
	m["listen"], m["ops_listen"] = ":0", ":0"
	if _, err := Parse(marshal(t, m), testEnv, testFiles); err != nil {
		t.Fatalf("two :0 listeners rejected: %v", err)
	}
	// Sentinel: addrs with master_name.
	m = base()
	r := sub(sub(m, "store"), "redis")
	delete(r, "url")
	r["addrs"] = []any{"s1:26379", "s2:26379"}
	r["master_name"] = "mymaster"
	cfg, err := Parse(marshal(t, m), testEnv, testFiles)
	if err != nil {
		t.Fatalf("sentinel config rejected: %v", err)
	}
	if got := cfg.Store.Redis; got.MasterName != "mymaster" || !slices.Equal(got.Addrs, []string{"s1:26379", "s2:26379"}) || got.URL != "" {
		t.Errorf("sentinel config not kept: %+v", got)
	}
}

func TestAllProblemsCollected(t *testing.T) {
	data := []byte(`
listen: nope
log:
  level: loud
refresh:
  margin: forever
upstream:
  max_rps: 0
apps:
  - name: Bad Name
    type: dingtalk
  - name: corp
    type: dingtalk_corp
    client_secret: ` + secretLiteral + `
    corp_secret_env: UNSET
clients:
  - name: c
    key_sha256: abc
    apps: [ghost]
`)
	want := []string{
		"listen",
		"log.level",
		"refresh.margin",
		"upstream.max_rps",
		"apps[0].name",
		"apps[0].client_id",
		"apps[0]",
		"apps[1].corp_id",
		"apps[1].client_secret",
		"apps[1].corp_secret_env",
		"clients[0].key_sha256",
		"clients[0].apps[0]",
	}
	if got := paths(problems(t, data)); !slices.Equal(got, want) {
		t.Errorf("problems at\n%v\nwant\n%v", got, want)
	}
}

func TestStructuralProblems(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // problem paths
		line string   // a "line N" every structural message must name, "" to skip
	}{
		{"unknown top-level key", "lissten: x\n", []string{"lissten"}, "line 1"},
		{"unknown nested key", "log:\n  colour: red\n", []string{"log.colour"}, "line 2"},
		{"unknown key in app", "apps:\n  - name: a\n    secret: " + secretLiteral + "\n", []string{"apps[0].secret"}, "line 3"},
		{"unknown key in redis", "store:\n  redis:\n    url: redis://h\n    db: 1\n", []string{"store.redis.db"}, "line 4"},
		{"unknown key in client", "clients:\n  - name: c\n    key: x\n", []string{"clients[0].key"}, "line 3"},
		{"duplicate key", "listen: a:1\nlisten: b:2\n", []string{"listen"}, "line 2"},
		{"bool expected", "apps:\n  - jsapi_ticket: " + secretLiteral + "\n", []string{"apps[0].jsapi_ticket"}, "line 2"},
		{"number expected", "upstream:\n  max_rps: " + secretLiteral + "\n", []string{"upstream.max_rps"}, "line 2"},
		{"string expected", "listen: [a, b]\n", []string{"listen"}, "line 1"},
		{"list expected", "apps: " + secretLiteral + "\n", []string{"apps"}, "line 1"},
		{"mapping expected", "log: " + secretLiteral + "\n", []string{"log"}, "line 1"},
		{"list of strings expected", "clients:\n  - apps: [{a: b}]\n", []string{"clients[0].apps[0]"}, "line 2"},
		{"top level not a mapping", "- a\n- b\n", []string{""}, "line 1"},
		{"several at once", "x: 1\nlog:\n  y: 2\napps:\n  - z: 3\n", []string{"x", "log.y", "apps[0].z"}, ""},
		{"merge key", "base: &b {level: info}\nlog:\n  <<: *b\n", []string{"base", "log"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := problems(t, []byte(tc.yaml))
			var structural []string
			for _, p := range ps {
				if strings.HasPrefix(p.Message, "line ") {
					structural = append(structural, p.Path)
					if tc.line != "" && !strings.HasPrefix(p.Message, tc.line+":") {
						t.Errorf("%s: message %q does not name %s", p.Path, p.Message, tc.line)
					}
				}
			}
			if !slices.Equal(structural, tc.want) {
				t.Errorf("structural problems at %v, want %v; all:\n%v", structural, tc.want, (&Error{ps}).Error())
			}
			// A structural problem is not repeated by validation at the same path.
			for _, p := range ps {
				if !strings.HasPrefix(p.Message, "line ") && slices.Contains(tc.want, p.Path) && p.Path != "" {
					t.Errorf("%s reported twice: %q", p.Path, p.Message)
				}
			}
		})
	}
}

func TestStructuralProblemsKeepValidating(t *testing.T) {
	// An unknown key does not hide the other problems of the file.
	m := base()
	sub(m, "log")["colour"] = "red"
	sub(m, "refresh")["margin"] = "3h"
	got := paths(problems(t, marshal(t, m)))
	if want := []string{"log.colour", "refresh.margin"}; !slices.Equal(got, want) {
		t.Errorf("problems at %v, want %v", got, want)
	}
}

func TestSyntaxEmptyAndMultiDocument(t *testing.T) {
	cases := []struct {
		name string
		yaml string
	}{
		{"syntax error", "apps:\n  - name: a\n  bad: [\n"},
		{"tab indentation", "log:\n\tlevel: info\n"},
		{"empty", ""},
		{"comments only", "# nothing\n"},
		{"two documents", string(marshal(t, base())) + "---\nlisten: b:2\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ps := problems(t, []byte(tc.yaml))
			if len(ps) != 1 || ps[0].Path != "" {
				t.Errorf("problems %v, want one about the whole file", ps)
			}
		})
	}
}

func TestSecretSources(t *testing.T) {
	cases := []struct {
		name string
		set  map[string]any
		want string
	}{
		{"file, trailing newline trimmed", map[string]any{"client_secret_file": "/run/secrets/crm"}, secretFileValue},
		{"env", map[string]any{"client_secret_env": "CRM_SECRET"}, secretEnvValue},
		{"literal", map[string]any{"client_secret": secretLiteral}, secretLiteral},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			delete(app(m, 0), "client_secret_env")
			for k, v := range tc.set {
				app(m, 0)[k] = v
			}
			cfg, err := Parse(marshal(t, m), testEnv, testFiles)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if cfg.Apps[0].ClientSecret != tc.want {
				t.Errorf("client secret not resolved as expected")
			}
		})
	}

	// The same for corp secrets and the Redis password, with a real file.
	dir := t.TempDir()
	path := filepath.Join(dir, "corp")
	if err := os.WriteFile(path, []byte(secretCorp+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := base()
	delete(app(m, 1), "corp_secret_env")
	app(m, 1)["corp_secret_file"] = path
	sub(sub(m, "store"), "redis")["password_file"] = path
	cfg, err := Parse(marshal(t, m), testEnv, os.ReadFile)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.Apps[1].CorpSecret != secretCorp || cfg.Store.Redis.Password != secretCorp {
		t.Errorf("corp secret or redis password not read from the file")
	}
}

func TestNoSecretInErrors(t *testing.T) {
	// Every case puts secrets where they cause an error; problems() fails on any piece of one in
	// Error(). Checked here as well for each Problem, and for the text of a real os.ReadFile failure.
	dir := t.TempDir()
	multi := filepath.Join(dir, "multi")
	if err := os.WriteFile(multi, []byte(secretFileValue+"\n"+secretCorp+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(m map[string]any){
		"two secret sources": func(m map[string]any) {
			app(m, 0)["client_secret"] = secretLiteral
			app(m, 0)["client_secret_file"] = "/run/secrets/crm"
		},
		"secret on the wrong app type":      func(m map[string]any) { app(m, 1)["client_secret"] = secretLiteral },
		"corp secret on the wrong app type": func(m map[string]any) { app(m, 0)["corp_secret"] = secretCorp },
		"secret file of two lines": func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret_file"] = multi
		},
		"env with a control character": func(m map[string]any) { app(m, 0)["client_secret_env"] = "CONTROL" },
		"literal with a control character": func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret"] = secretLiteral + "\x7f"
		},
		"secret as an env name": func(m map[string]any) { app(m, 0)["client_secret_env"] = secretEnvValue },
		"secret in a bad redis url": func(m map[string]any) {
			sub(sub(m, "store"), "redis")["url"] = "redis://:" + secretRedisPw + "@h:6379/notadb"
		},
		"secret in an unparsable redis url": func(m map[string]any) {
			sub(sub(m, "store"), "redis")["url"] = "redis://:" + secretRedisPw + "@h:port/0"
		},
		"secret in a redis url with a wrong scheme": func(m map[string]any) {
			sub(sub(m, "store"), "redis")["url"] = "http://u:" + secretRedisPw + "@h:6379"
		},
		"secret as a bool":     func(m map[string]any) { app(m, 0)["jsapi_ticket"] = secretLiteral },
		"secret as a number":   func(m map[string]any) { sub(m, "upstream")["max_rps"] = secretLiteral },
		"secret as a duration": func(m map[string]any) { sub(m, "refresh")["margin"] = secretLiteral },
		"secret as a map value under a string key": func(m map[string]any) {
			app(m, 0)["client_secret"] = map[string]any{"v": secretLiteral}
		},
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			m := base()
			mutate(m)
			cfg, err := Parse(marshal(t, m), testEnv, os.ReadFile)
			if err == nil {
				t.Fatalf("Parse succeeded: %v", cfg != nil)
			}
			assertNoSecrets(t, err.Error())
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error is %T", err)
			}
			for _, p := range cerr.Problems {
				assertNoSecrets(t, p.Path+" "+p.Message)
			}
		})
	}
}

func TestLoadExample(t *testing.T) {
	getenv := env(map[string]string{
		"CRM_CLIENT_SECRET":  secretEnvValue,
		"OLDORG_CORP_SECRET": secretCorp,
	})
	cfg, err := Load(filepath.Join("..", "..", "config.example.yaml"), getenv)
	if err != nil {
		t.Fatalf("Load(config.example.yaml): %v", err)
	}
	if len(cfg.Apps) != 2 || len(cfg.Clients) != 2 {
		t.Fatalf("example has %d apps and %d clients, want 2 and 2", len(cfg.Apps), len(cfg.Clients))
	}
	if sync := cfg.Clients[1]; len(sync.Apps) != 0 || len(sync.Proxy["crm"]) != 3 {
		t.Errorf("example proxy-only client not as documented")
	}
	crm, old := cfg.Apps[0], cfg.Apps[1]
	if crm.Name != "crm" || crm.Type != TypeDingTalk || crm.ClientSecret != secretEnvValue || !crm.JSAPITicket ||
		crm.CorpID == "" || crm.AgentID == "" {
		t.Errorf("example app crm not as documented")
	}
	if old.Name != "oldorg" || old.Type != TypeDingTalkCorp || old.CorpSecret != secretCorp || old.TokenAPI != TokenAPILegacy {
		t.Errorf("example app oldorg not as documented")
	}
	if cfg.Store.Redis == nil || cfg.Upstream.MaxRPS != DefaultMaxRPS || cfg.Listen != DefaultListen {
		t.Errorf("example does not show the documented defaults")
	}
	// The example's key hash must not admit a guessable key.
	for _, weak := range []string{"", "test", "tkd_", "changeme", "secret"} {
		if cfg.Clients[0].KeySHA256 == HashKey(weak) {
			t.Errorf("example key_sha256 is the hash of %q", weak)
		}
	}

	// Without the environment, both secrets are reported, by path.
	_, err = Load(filepath.Join("..", "..", "config.example.yaml"), env(nil))
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Load without env: %v", err)
	}
	if got, want := paths(cerr.Problems), []string{"apps[0].client_secret_env", "apps[1].corp_secret_env"}; !slices.Equal(got, want) {
		t.Errorf("problems at %v, want %v", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.yaml"), env(nil))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing file) = %v, want fs.ErrNotExist", err)
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Problems: []Problem{
		{Path: "apps[1].client_secret_file", Message: "file \"/x\" does not exist"},
		{Path: "", Message: "the file holds more than one YAML document"},
	}}
	want := "apps[1].client_secret_file: file \"/x\" does not exist\nthe file holds more than one YAML document"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// contractExample is the configuration shown in the contract's "Configuration" section, verbatim.
const contractExample = `
listen: 127.0.0.1:8080        # client API
ops_listen: 127.0.0.1:9090    # /metrics /healthz /readyz, no auth: keep it on a private interface
log:
  level: info                 # debug | info | warn | error
  format: json                # json | text
store:                        # no store.redis: in-memory store, for one replica only
  redis:
    url: redis://127.0.0.1:6379/0     # redis:// or rediss:// (TLS); or:
    # addrs: [h1:7000, h2:7001]        # several addrs: Redis Cluster
    # master_name: mymaster            # with addrs: Redis Sentinel
    # password_file: /run/secrets/redis
    key_prefix: tokend
refresh:
  margin: 10m                 # refresh when less than this is left (capped at half the token's lifetime)
upstream:
  timeout: 10s                # one DingTalk call; the refresh lock lapses at most a few seconds after this
  failure_retry: 30s          # how often an app whose credentials/IP DingTalk rejects is tried again
dingtalk:
  api_base: https://api.dingtalk.com
  oapi_base: https://oapi.dingtalk.com
apps:
  - name: crm                 # [a-z0-9][a-z0-9_-]{0,63}, unique
    type: dingtalk            # internal app: client_id + client secret
    client_id: dingxxxxxxxx
    client_secret_file: /run/secrets/crm     # exactly one of client_secret_file, client_secret_env, client_secret
    token_api: v1             # v1 (POST /v1.0/oauth2/accessToken, default) | legacy (GET /gettoken)
    jsapi_ticket: true        # keep a jsapi ticket too (default false); the ticket API follows token_api
    corp_id: dingcorpxxxx     # required when jsapi_ticket is true (for jsapi_signature)
    agent_id: "310804070"     # required when jsapi_ticket is true
    signature_hash: sha1      # sha1 (default) | sha256
  - name: oldorg
    type: dingtalk_corp       # organization-authorized app: GET /gettoken?corpid=&corpsecret= (legacy ticket API)
    corp_id: dingyyyy
    corp_secret_env: OLDORG_SECRET          # or corp_secret_file / corp_secret
clients:
  - name: billing
    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    apps: [crm]               # apps this client may use; ["*"] = all
`

func TestContractExample(t *testing.T) {
	cfg, err := Parse([]byte(contractExample),
		env(map[string]string{"OLDORG_SECRET": secretCorp}),
		files(map[string]string{"/run/secrets/crm": secretFileValue + "\n"}))
	if err != nil {
		t.Fatalf("the contract's example does not parse: %v", err)
	}
	if len(cfg.Apps) != 2 || cfg.Apps[0].ClientSecret != secretFileValue || cfg.Apps[1].CorpSecret != secretCorp ||
		cfg.Clients[0].KeySHA256 != HashKey("test") || !slices.Equal(cfg.Clients[0].Apps, []string{"crm"}) {
		t.Errorf("the contract's example is not read as written")
	}
}

// TestCredential checks which configured values become the DingTalk credential of each app type.
func TestCredential(t *testing.T) {
	tests := []struct {
		name string
		app  App
		want dingtalk.App
	}{
		{"internal v1", App{Type: TypeDingTalk, TokenAPI: TokenAPIV1, ClientID: "k", ClientSecret: "s", CorpID: "c"},
			dingtalk.App{Type: dingtalk.Internal, API: dingtalk.V1, Key: "k", Secret: "s"}},
		{"internal legacy", App{Type: TypeDingTalk, TokenAPI: TokenAPILegacy, ClientID: "k", ClientSecret: "s"},
			dingtalk.App{Type: dingtalk.Internal, API: dingtalk.Legacy, Key: "k", Secret: "s"}},
		{"corp", App{Type: TypeDingTalkCorp, TokenAPI: TokenAPILegacy, CorpID: "c", CorpSecret: "cs"},
			dingtalk.App{Type: dingtalk.Corp, API: dingtalk.Legacy, Key: "c", Secret: "cs"}},
	}
	for _, tt := range tests {
		if got := tt.app.Credential(); got != tt.want {
			// Not printed: the credential holds the (test) secret.
			t.Errorf("%s: Credential() differs from the expected one", tt.name)
		}
	}
}

// TestMessagesNameTheValue: a problem quotes the offending value, so that a typo is found at a glance,
// except secrets, key hashes, the parts of URLs that may hold a password, and values that look like a
// credential pasted on the wrong line.
func TestMessagesNameTheValue(t *testing.T) {
	redis := func(m map[string]any) map[string]any { return sub(sub(m, "store"), "redis") }
	cases := []struct {
		name   string
		mutate func(m map[string]any)
		want   string // the whole line of the problem
	}{
		{"app type", func(m map[string]any) { app(m, 1)["type"] = "nosuch" },
			`apps[1].type: "nosuch" is not one of dingtalk, dingtalk_corp, dingtalk_isv`},
		{"app type missing", func(m map[string]any) { delete(app(m, 1), "type") },
			`apps[1].type: is required: one of dingtalk, dingtalk_corp, dingtalk_isv`},
		{"app name", func(m map[string]any) { app(m, 0)["name"] = "Not Valid!" },
			`apps[0].name: "Not Valid!" must match [a-z0-9][a-z0-9_-]{0,63}`},
		{"token_api", func(m map[string]any) { app(m, 0)["token_api"] = "v2" },
			`apps[0].token_api: "v2" is not one of v1, legacy`},
		{"corp token_api", func(m map[string]any) { app(m, 1)["token_api"] = "v1" },
			`apps[1].token_api: "v1": type dingtalk_corp always uses the legacy API: remove token_api`},
		{"signature_hash", func(m map[string]any) { app(m, 0)["signature_hash"] = "md5" },
			`apps[0].signature_hash: "md5" is not one of sha1, sha256`},
		{"agent_id", func(m map[string]any) { app(m, 0)["agent_id"] = "12a" },
			`apps[0].agent_id: "12a" must be digits (at most 20)`},
		{"corp_id", func(m map[string]any) { app(m, 0)["corp_id"] = "ding corp" },
			`apps[0].corp_id: "ding corp" must not contain spaces or control characters`},
		{"client_id", func(m map[string]any) { app(m, 0)["client_id"] = "ding\tx" },
			`apps[0].client_id: "ding\tx" must not contain spaces or control characters`},
		{"env name", func(m map[string]any) { app(m, 0)["client_secret_env"] = "CRM-SECRET" },
			`apps[0].client_secret_env: "CRM-SECRET" must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)`},
		{"log level", func(m map[string]any) { sub(m, "log")["level"] = "verbose" },
			`log.level: "verbose" is not one of debug, info, warn, error`},
		{"log format", func(m map[string]any) { sub(m, "log")["format"] = "xml" },
			`log.format: "xml" is not one of json, text`},
		{"duration syntax", func(m map[string]any) { sub(m, "refresh")["margin"] = "600" },
			`refresh.margin: "600" is not a duration such as 30s, 10m or 1h30m`},
		{"duration range", func(m map[string]any) { sub(m, "refresh")["margin"] = "2h" },
			`refresh.margin: "2h" must be more than 0 and less than 2h0m0s`},
		{"timeout", func(m map[string]any) { sub(m, "upstream")["timeout"] = "61s" },
			`upstream.timeout: "61s" must be more than 0 and at most 1m0s`},
		{"failure_retry", func(m map[string]any) { sub(m, "upstream")["failure_retry"] = "999ms" },
			`upstream.failure_retry: "999ms" must be at least 1s`},
		{"max_rps", func(m map[string]any) { sub(m, "upstream")["max_rps"] = 501 },
			`upstream.max_rps: 501 must be more than 0 and at most 500`},
		{"listen", func(m map[string]any) { m["listen"] = "8080" },
			`listen: "8080" must be host:port`},
		{"listen port", func(m map[string]any) { m["listen"] = "127.0.0.1:http" },
			`listen: "127.0.0.1:http" must be host:port with a port from 0 to 65535`},
		{"listeners clash", func(m map[string]any) { m["ops_listen"] = ":8080" },
			`ops_listen: ":8080" must differ from listen ("127.0.0.1:8080")`},
		{"base url", func(m map[string]any) { sub(m, "dingtalk")["api_base"] = "api.dingtalk.com" },
			`dingtalk.api_base: "api.dingtalk.com" must be an absolute http:// or https:// URL`},
		{"base url with a password", func(m map[string]any) {
			sub(m, "dingtalk")["oapi_base"] = "https://u:" + secretLiteral + "@oapi.dingtalk.com/x"
		}, `dingtalk.oapi_base: "https://u:xxxxx@oapi.dingtalk.com/x" must be scheme://host[:port] only, without user, path, query or fragment`},
		{"base url with a query", func(m map[string]any) {
			sub(m, "dingtalk")["oapi_base"] = "https://oapi.dingtalk.com/?appsecret=" + secretLiteral
		}, `dingtalk.oapi_base: "https://oapi.dingtalk.com/?…" must be scheme://host[:port] only, without user, path, query or fragment`},
		{"redis scheme", func(m map[string]any) { redis(m)["url"] = "http://u:" + secretRedisPw + "@h:6379" },
			`store.redis.url: must be a redis:// or rediss:// URL, not "http://"`},
		{"redis port", func(m map[string]any) { redis(m)["url"] = "redis://:" + secretRedisPw + "@h:0/1" },
			`store.redis.url: port "0" is not from 1 to 65535`},
		{"redis db", func(m map[string]any) { redis(m)["url"] = "redis://:" + secretRedisPw + "@h:6379/x" },
			`store.redis.url: path "/x" must be empty or /<database number>`},
		{"redis addr", func(m map[string]any) {
			delete(redis(m), "url")
			redis(m)["addrs"] = []any{"h1:7000", "h2"}
		}, `store.redis.addrs[1]: "h2" must be host:port`},
		{"redis addr duplicate", func(m map[string]any) {
			delete(redis(m), "url")
			redis(m)["addrs"] = []any{"h1:7000", "h1:7000"}
		}, `store.redis.addrs[1]: duplicate address "h1:7000" (also store.redis.addrs[0])`},
		{"key_prefix", func(m map[string]any) { redis(m)["key_prefix"] = "{tokend}" },
			`store.redis.key_prefix: "{tokend}" must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}`},
		{"client app", func(m map[string]any) { client(m, 0)["apps"] = []any{"crm", "nope"} },
			`clients[0].apps[1]: unknown app "nope"`},
		{"client app duplicate", func(m map[string]any) { client(m, 0)["apps"] = []any{"crm", "crm"} },
			`clients[0].apps[1]: duplicate entry "crm" (also clients[0].apps[0])`},
		{"rate limit", func(m map[string]any) { m["rate_limit"] = map[string]any{"rps": -1} },
			`rate_limit.rps: -1 must be between 0 (no limit) and 1000000`},
		{"burst", func(m map[string]any) { m["rate_limit"] = map[string]any{"rps": 1, "burst": 0} },
			`rate_limit.burst: 0 must be at least 1`},
		// Never quoted: a credential pasted on the wrong line, a key hash, a secret.
		{"credential as a duration", func(m map[string]any) { sub(m, "refresh")["margin"] = secretLiteral },
			`refresh.margin: a value of 20 characters (not shown: it looks like a credential) is not a duration such as 30s, 10m or 1h30m`},
		{"credential as a type", func(m map[string]any) { app(m, 1)["type"] = secretCorp },
			`apps[1].type: a value of 21 characters (not shown: it looks like a credential) is not one of dingtalk, dingtalk_corp, dingtalk_isv`},
		{"key hash", func(m map[string]any) { client(m, 0)["key_sha256"] = hashA[:63] },
			`clients[0].key_sha256: must be 64 hexadecimal digits, the SHA-256 of the client key (run tokend keygen)`},
		{"secret literal", func(m map[string]any) {
			delete(app(m, 0), "client_secret_env")
			app(m, 0)["client_secret"] = secretLiteral + "\x7f"
		}, `apps[0].client_secret: must not contain control characters`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.mutate(m)
			ps := problems(t, marshal(t, m))
			var lines []string
			for _, p := range ps {
				lines = append(lines, p.String())
			}
			if !slices.Contains(lines, tc.want) {
				t.Errorf("no problem\n  %s\namong\n  %s", tc.want, strings.Join(lines, "\n  "))
			}
		})
	}
}

func TestLooksLikeCredential(t *testing.T) {
	for _, v := range []string{"SeCrEtLiT-9d2c7b1a0e", "0123456789abcdefABCDEF", "dingxxxxxxxxxxxxx1", "a1b2c3d4e5f6g7h8+/=="} {
		if !looksLikeCredential(v) {
			t.Errorf("%q not taken for a credential", v)
		}
	}
	for _, v := range []string{"verbose", "10 minutes", "1h30m15s500ms", "redis-0.example.internal:6379", "https://api.dingtalk.com",
		"dingtalk_corp_app", "abcdefghijklmnopq", "1234567890123456", "Not Valid!"} {
		if looksLikeCredential(v) {
			t.Errorf("%q taken for a credential", v)
		}
	}
}
