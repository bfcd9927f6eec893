package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/tokend/tokend/internal/config"
)

// Markers of the secrets the fuzzed configurations are given. Secrets are built as
// start marker + middle + end marker, so that a message quoting any end of one is caught. No fixed
// message of the config package contains a marker, so a marker in an error was copied from a value.
const (
	envMarkStart  = "Qx7EnvA"
	envMarkEnd    = "AvnE7xQ"
	fileMarkStart = "Qx7FileB"
	fileMarkEnd   = "BeliF7xQ"
	litMarkStart  = "Qx7LitC"
	litMarkEnd    = "CtiL7xQ"
)

// fuzzSecrets is what the fake environment and file system hold for a fuzzed configuration.
type fuzzSecrets struct {
	envTail, fileTail string
	certPEM, keyPEM   []byte
}

// getenv gives every variable a secret, except names containing UNSET.
func (s *fuzzSecrets) getenv(name string) string {
	if strings.Contains(name, "UNSET") {
		return ""
	}
	return envMarkStart + "-env-secret-value-" + envMarkEnd + s.envTail
}

// readFile serves TLS material for *.crt, *.key and *.pem, a secret for any other name, and errors
// for names containing missing, denied or eio. Its errors name the file, never the content, as the
// operating system's do.
func (s *fuzzSecrets) readFile(name string) ([]byte, error) {
	switch {
	case strings.Contains(name, "missing"):
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case strings.Contains(name, "denied"):
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	case strings.Contains(name, "eio"):
		return nil, &fs.PathError{Op: "read", Path: name, Err: syscall.EIO}
	case strings.HasSuffix(name, ".crt"), strings.HasSuffix(name, ".pem"):
		return s.certPEM, nil
	case strings.HasSuffix(name, ".key"):
		return s.keyPEM, nil
	}
	return []byte(fileMarkStart + "-file-secret-value-" + fileMarkEnd + s.fileTail), nil
}

var fuzzAppName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// FuzzParse checks config.Parse on arbitrary YAML, with a fake environment and file system that
// hold distinctive secrets (their tails are fuzzed too, control characters included):
//   - it never panics, and returns exactly one of a config and a *config.Error;
//   - no error shows a secret from the environment, a secret file or the TLS private key, nor a
//     literal client_secret, corp_secret or Redis URL password, unless the same text is also written
//     somewhere that is not a secret (then quoting it is no leak);
//   - it is deterministic;
//   - an accepted configuration holds what the rest of tokend relies on: valid app names, a secret
//     without control characters for every app, clients that only name existing apps and can be
//     identified.
//
// Run with go test -run '^$' -fuzz '^FuzzParse$' ./internal/config (scripts/ci-security.sh).
func FuzzParse(f *testing.F) {
	f.Add([]byte("apps:\n  - name: crm\n    type: dingtalk\n    client_id: dingcrm\n    client_secret_env: CRM\nclients:\n  - name: b\n    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n    apps: [crm]\n"), "", "\n")
	f.Add([]byte("apps:\n  - name: crm\n    type: dingtalk\n    client_id: dingcrm\n    client_secret: "+litMarkStart+"-literal-"+litMarkEnd+"\n    surprise: 1\n"), "\x01", "\nsecond line")
	certPEM, keyPEM := selfSigned(f)
	f.Fuzz(func(t *testing.T, data []byte, envTail, fileTail string) {
		s := &fuzzSecrets{envTail: envTail, fileTail: fileTail, certPEM: certPEM, keyPEM: keyPEM}
		cfg, err := config.Parse(data, s.getenv, s.readFile)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Parse returned config %t and error %t: want exactly one", cfg != nil, err != nil)
		}
		cfg2, err2 := config.Parse(data, s.getenv, s.readFile)
		if err != nil {
			var cerr *config.Error
			if !errors.As(err, &cerr) || len(cerr.Problems) == 0 {
				t.Fatalf("error is %T with no problems, want a *config.Error listing problems", err)
			}
			for _, p := range cerr.Problems {
				if p.Message == "" {
					t.Fatalf("problem at %q has no message", p.Path)
				}
			}
			checkNoSecretInError(t, data, keyPEM, err.Error())
			if err2 == nil || err2.Error() != err.Error() {
				t.Fatal("Parse is not deterministic: a second parse of the same input gave another error")
			}
			return
		}
		if err2 != nil || !reflect.DeepEqual(cfg, cfg2) {
			t.Fatal("Parse is not deterministic: a second parse of the same input gave another result")
		}
		checkAccepted(t, cfg)
	})
}

// checkNoSecretInError fails if msg shows a secret that data does not also hold in a place that is
// not secret.
func checkNoSecretInError(t *testing.T, data, keyPEM []byte, msg string) {
	t.Helper()
	type planted struct{ what, mark string }
	checks := []planted{
		{"an environment secret", envMarkStart}, {"an environment secret", envMarkEnd},
		{"a secret file's content", fileMarkStart}, {"a secret file's content", fileMarkEnd},
	}
	for _, c := range checks {
		if strings.Contains(msg, c.mark) && !strings.Contains(string(data), c.mark) {
			t.Fatalf("the error shows %s:\n%s", c.what, redact(msg))
		}
	}
	// Any 16-byte piece of the base64 body of the private key.
	if body := pemBody(keyPEM); len(body) >= 16 {
		for i := 0; i+16 <= len(body); i += 8 {
			if strings.Contains(msg, body[i:i+16]) {
				t.Fatalf("the error shows a piece of the TLS private key:\n%s", redact(msg))
			}
		}
	}
	secrets, public, ok := literalSecrets(data)
	if !ok {
		return // no node tree (a syntax error): no telling secret values from others
	}
	for _, v := range secrets {
		for _, mark := range []string{litMarkStart, litMarkEnd} {
			if strings.Contains(v, mark) && strings.Contains(msg, mark) && !strings.Contains(public, mark) {
				t.Fatalf("the error shows a literal secret:\n%s", redact(msg))
			}
		}
		// A literal secret of 12 bytes or more that no fixed message could contain by chance.
		if len(v) >= 12 && !strings.ContainsFunc(v, unicode.IsSpace) && strings.ContainsAny(v, "0123456789") &&
			strings.Contains(msg, v) && !strings.Contains(public, v) && !looksLikeMessageText(v) {
			t.Fatalf("the error shows a literal secret:\n%s", redact(strings.ReplaceAll(msg, v, "<LITERAL SECRET>")))
		}
	}
}

// looksLikeMessageText reports whether v could be a piece of a fixed message or of a field path
// (lower-case words, digits, "apps[0].client_id"), which an error may hold for reasons of its own.
func looksLikeMessageText(v string) bool {
	return !strings.ContainsFunc(v, func(r rune) bool { return !strings.ContainsRune("abcdefghijklmnopqrstuvwxyz0123456789_.[]", r) })
}

// literalSecrets walks data's YAML node tree and returns the values written under client_secret and
// corp_secret keys and the passwords of url values (the secrets), and every other scalar, keys
// included, joined by newlines (the public text). ok is false when data has no node tree.
func literalSecrets(data []byte) (secrets []string, public string, ok bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, "", false
	}
	var pub strings.Builder
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		if n == nil || seen[n] {
			return
		}
		seen[n] = true
		pub.WriteString(n.Anchor + "\n" + n.Tag + "\n")
		switch n.Kind {
		case yaml.ScalarNode:
			switch key {
			case "client_secret", "corp_secret":
				secrets = append(secrets, n.Value)
				return
			case "url":
				if u, err := url.Parse(n.Value); err == nil {
					if pw, set := u.User.Password(); set && pw != "" {
						secrets = append(secrets, pw)
						pub.WriteString(strings.Replace(n.Value, pw, "", 1) + "\n")
						return
					}
				}
			}
			pub.WriteString(n.Value + "\n")
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i], "")
				walk(n.Content[i+1], n.Content[i].Value)
			}
		case yaml.AliasNode:
			pub.WriteString(n.Value + "\n")
			walk(n.Alias, key)
		default:
			for _, c := range n.Content {
				walk(c, key)
			}
		}
	}
	walk(&doc, "")
	return secrets, pub.String(), true
}

// checkAccepted checks what the rest of tokend relies on in an accepted configuration.
func checkAccepted(t *testing.T, cfg *config.Config) {
	t.Helper()
	if len(cfg.Apps) == 0 {
		t.Fatal("accepted a configuration without apps")
	}
	apps := map[string]bool{}
	for i, a := range cfg.Apps {
		if !fuzzAppName.MatchString(a.Name) || apps[a.Name] {
			t.Fatalf("apps[%d]: accepted name %q (invalid or duplicate)", i, a.Name)
		}
		apps[a.Name] = true
		var secret string
		switch a.Type {
		case config.TypeDingTalk:
			secret = a.ClientSecret
			if a.ClientID == "" || a.CorpSecret != "" {
				t.Fatalf("apps[%d]: internal app without client_id or with a corp secret", i)
			}
		case config.TypeDingTalkCorp:
			secret = a.CorpSecret
			if a.CorpID == "" || a.ClientSecret != "" || a.TokenAPI != config.TokenAPILegacy {
				t.Fatalf("apps[%d]: corp app without corp_id, with a client secret or not on the legacy API", i)
			}
		default:
			t.Fatalf("apps[%d]: accepted type %q", i, a.Type)
		}
		if secret == "" || strings.ContainsFunc(secret, unicode.IsControl) {
			t.Fatalf("apps[%d]: accepted an empty secret or one with control characters", i)
		}
		if a.JSAPITicket && (a.CorpID == "" || a.AgentID == "") {
			t.Fatalf("apps[%d]: jsapi_ticket without corp_id or agent_id", i)
		}
		if a.SignatureHash != config.HashSHA1 && a.SignatureHash != config.HashSHA256 {
			t.Fatalf("apps[%d]: accepted signature_hash %q", i, a.SignatureHash)
		}
	}
	names := map[string]bool{}
	for i, c := range cfg.Clients {
		if c.Name == "" || names[c.Name] {
			t.Fatalf("clients[%d]: accepted an empty or duplicate name", i)
		}
		names[c.Name] = true
		if c.KeySHA256 == ([32]byte{}) && len(c.CertNames) == 0 {
			t.Fatalf("clients[%d]: accepted a client that nothing identifies", i)
		}
		if c.KeySHA256 == config.HashKey("") {
			t.Fatalf("clients[%d]: accepted the hash of the empty key", i)
		}
		if len(c.Apps) == 0 {
			t.Fatalf("clients[%d]: accepted a client without apps", i)
		}
		for _, a := range c.Apps {
			if a != config.AllApps && !apps[a] {
				t.Fatalf("clients[%d]: accepted unknown app %q", i, a)
			}
		}
		if len(c.CertNames) > 0 && (cfg.TLS == nil || cfg.TLS.ClientCAFile == "") {
			t.Fatalf("clients[%d]: accepted cert_names without a client CA", i)
		}
		if c.RateLimit.RPS < 0 || c.RateLimit.RPS > 0 && c.RateLimit.Burst < 1 {
			t.Fatalf("clients[%d]: accepted rate limit %+v", i, c.RateLimit)
		}
	}
	if cfg.Store.Redis != nil && cfg.Store.Redis.URL == "" && len(cfg.Store.Redis.Addrs) == 0 {
		t.Fatal("accepted a Redis store with neither url nor addrs")
	}
	if cfg.Refresh.Margin <= 0 || cfg.Upstream.Timeout <= 0 || !(cfg.Upstream.MaxRPS > 0) {
		t.Fatal("accepted a non-positive margin, timeout or max_rps")
	}
}

// redact hides the markers of planted secrets, so that failure output shows no secret either.
func redact(s string) string {
	for _, m := range []string{envMarkStart, envMarkEnd, fileMarkStart, fileMarkEnd, litMarkStart, litMarkEnd} {
		s = strings.ReplaceAll(s, m, "<SECRET>")
	}
	return s
}

// pemBody returns the base64 text of the first PEM block in p.
func pemBody(p []byte) string {
	b, _ := pem.Decode(p)
	if b == nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b.Bytes)
}

// selfSigned returns a throw-away certificate and its private key, PEM-encoded.
func selfSigned(tb testing.TB) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
