// Package deploy holds no Go code: its tests check the deployment artifacts (Dockerfile, .dockerignore,
// docker-compose.yml and deploy/...) without Docker, Kubernetes or Prometheus. They check that every file
// parses, carries the hardening and settings the README promises, and agrees with the other files and
// with the metrics contract. scripts/check-deploy.sh runs them together with promtool.
package deploy

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tokend/tokend/internal/config"
)

// root is the repository root, seen from this package's directory (where go test runs).
const root = ".."

// metricRE finds tokend metric names in PromQL.
var metricRE = regexp.MustCompile(`\btokend_[a-z0-9_]+`)

// contractMetrics are the metric names of contract.md, with whether each is a histogram.
func contractMetrics() map[string]bool {
	return map[string]bool{
		"tokend_token_expiry_timestamp_seconds":    false,
		"tokend_refresh_total":                     false,
		"tokend_upstream_requests_total":           false,
		"tokend_upstream_request_duration_seconds": true,
		"tokend_http_requests_total":               false,
		"tokend_http_request_duration_seconds":     true,
		"tokend_invalidations_total":               false,
		"tokend_lock_acquisitions_total":           false,
		"tokend_store_up":                          false,
		"tokend_build_info":                        false,
	}
}

// plannedMetrics may be used by alerts (never alone) but not by the dashboard: they are not in the
// contract yet.
func plannedMetrics() map[string]bool {
	return map[string]bool{"tokend_app_state": true}
}

// baseMetric maps a series name to its metric family: tokend_x_bucket to tokend_x for histograms.
func baseMetric(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && contractMetrics()[base] {
			return base
		}
	}
	return name
}

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return b
}

// decodeDocs returns every non-empty YAML document of a file as a node.
func decodeDocs(t *testing.T, rel string) []*yaml.Node {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, rel)))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("parse %s: %v", rel, err)
		}
		if len(n.Content) > 0 && n.Content[0].Kind != 0 {
			docs = append(docs, &n)
		}
	}
}

func decodeNode(t *testing.T, what string, n *yaml.Node, v any) {
	t.Helper()
	if err := n.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", what, err)
	}
}

func decodeYAML(t *testing.T, rel string, v any) {
	t.Helper()
	docs := decodeDocs(t, rel)
	if len(docs) != 1 {
		t.Fatalf("%s: want 1 YAML document, got %d", rel, len(docs))
	}
	decodeNode(t, rel, docs[0], v)
}

// subset reports whether every label of sel is in labels with the same value.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ---- tokend configuration (interim strict schema) ----

// tokendConfig mirrors the configuration keys the deployment checks look at, including the secret file
// paths that internal/config resolves away. tokend's own strict parsing and validation of the same files
// runs in TestConfigsPassTokendValidation.
type tokendConfig struct {
	Listen         string `yaml:"listen"`
	OpsListen      string `yaml:"ops_listen"`
	GatewayListen  string `yaml:"gateway_listen"`
	CallbackListen string `yaml:"callback_listen"`
	Log            struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
	Store struct {
		Redis *struct {
			URL          string   `yaml:"url"`
			Addrs        []string `yaml:"addrs"`
			MasterName   string   `yaml:"master_name"`
			PasswordFile string   `yaml:"password_file"`
			KeyPrefix    string   `yaml:"key_prefix"`
		} `yaml:"redis"`
	} `yaml:"store"`
	Refresh struct {
		Margin string `yaml:"margin"`
	} `yaml:"refresh"`
	Upstream struct {
		Timeout      string  `yaml:"timeout"`
		FailureRetry string  `yaml:"failure_retry"`
		MaxRPS       float64 `yaml:"max_rps"`
	} `yaml:"upstream"`
	DingTalk struct {
		APIBase  string `yaml:"api_base"`
		OAPIBase string `yaml:"oapi_base"`
	} `yaml:"dingtalk"`
	Apps []struct {
		Name             string `yaml:"name"`
		Type             string `yaml:"type"`
		ClientID         string `yaml:"client_id"`
		ClientSecretFile string `yaml:"client_secret_file"`
		ClientSecretEnv  string `yaml:"client_secret_env"`
		ClientSecret     string `yaml:"client_secret"`
		TokenAPI         string `yaml:"token_api"`
		JSAPITicket      bool   `yaml:"jsapi_ticket"`
		CorpID           string `yaml:"corp_id"`
		AgentID          string `yaml:"agent_id"`
		SignatureHash    string `yaml:"signature_hash"`
		CorpSecretFile   string `yaml:"corp_secret_file"`
		CorpSecretEnv    string `yaml:"corp_secret_env"`
		CorpSecret       string `yaml:"corp_secret"`
	} `yaml:"apps"`
	Clients []struct {
		Name      string   `yaml:"name"`
		KeySHA256 string   `yaml:"key_sha256"`
		Apps      []string `yaml:"apps"`
	} `yaml:"clients"`
}

// secretFiles returns every file the config reads a secret from.
func (c *tokendConfig) secretFiles() []string {
	var files []string
	if c.Store.Redis != nil && c.Store.Redis.PasswordFile != "" {
		files = append(files, c.Store.Redis.PasswordFile)
	}
	for _, a := range c.Apps {
		for _, f := range []string{a.ClientSecretFile, a.CorpSecretFile} {
			if f != "" {
				files = append(files, f)
			}
		}
	}
	return files
}

func parseTokendConfig(t *testing.T, what string, data []byte) *tokendConfig {
	t.Helper()
	var c tokendConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return &c
}

// TestConfigsPassTokendValidation parses both deployment configs with tokend's own config package, so
// they are held to exactly the rules tokend applies at start (strict keys, values, readable secret files).
// Compose secrets are read from the files Compose mounts; the Kubernetes ones are stubbed for every key of
// secret.example.yaml.
func TestConfigsPassTokendValidation(t *testing.T) {
	noEnv := func(string) string { return "" }

	t.Run("compose", func(t *testing.T) {
		c := loadCompose(t)
		readSecret := func(name string) ([]byte, error) {
			s, ok := c.Secrets[path.Base(name)]
			if path.Dir(name) != "/run/secrets" || !ok {
				return nil, fs.ErrNotExist
			}
			return os.ReadFile(filepath.Join(root, filepath.FromSlash(s.File)))
		}
		if _, err := config.Parse(readFile(t, "deploy/compose/config.yaml"), noEnv, readSecret); err != nil {
			t.Errorf("deploy/compose/config.yaml:\n%v", err)
		}
	})

	t.Run("configmap", func(t *testing.T) {
		objs := kubernetesObjects(t)
		var cm struct {
			Data map[string]string `yaml:"data"`
		}
		o := one(t, objs, "ConfigMap")
		decodeNode(t, o.file, o.node, &cm)
		var sec struct {
			StringData map[string]string `yaml:"stringData"`
		}
		s := one(t, objs, "Secret")
		decodeNode(t, s.file, s.node, &sec)
		readSecret := func(name string) ([]byte, error) {
			if _, ok := sec.StringData[path.Base(name)]; path.Dir(name) != "/run/secrets" || !ok {
				return nil, fs.ErrNotExist
			}
			return []byte("stub-secret"), nil
		}
		if _, err := config.Parse([]byte(cm.Data["config.yaml"]), noEnv, readSecret); err != nil {
			t.Errorf("configmap.yaml config.yaml:\n%v", err)
		}
	})
}

// The optional listeners' ports in the container configs, the Deployment, the Services, the
// NetworkPolicy and Compose: one port each, never shared.
const (
	gatewayPort  = "8443" // gateway_listen: internal, like the client API
	callbackPort = "8444" // callback_listen: the one DingTalk reaches from outside
)

// checkContainerConfig checks what every containerised config needs: listeners on all interfaces at the
// ports the images, probes and policies use, secrets only from files under /run/secrets, no inline
// secrets, and a valid shape for every app and client.
func checkContainerConfig(t *testing.T, what string, c *tokendConfig) {
	t.Helper()
	for _, l := range []struct{ key, addr, port string }{
		{"listen", c.Listen, "8080"},
		{"ops_listen", c.OpsListen, "9090"},
		{"gateway_listen", c.GatewayListen, gatewayPort},
		{"callback_listen", c.CallbackListen, callbackPort},
	} {
		if l.addr == "" && (l.key == "gateway_listen" || l.key == "callback_listen") {
			continue // optional listeners
		}
		host, port, err := net.SplitHostPort(l.addr)
		if err != nil || port != l.port || (host != "" && host != "0.0.0.0") {
			t.Errorf("%s: %s is %q, want :%s (all interfaces inside the container)", what, l.key, l.addr, l.port)
		}
	}
	if c.Store.Redis == nil {
		t.Errorf("%s: store.redis missing: replicas need a shared store", what)
	}
	if c.Upstream.MaxRPS <= 0 {
		t.Errorf("%s: upstream.max_rps = %v, want > 0", what, c.Upstream.MaxRPS)
	}
	for _, f := range c.secretFiles() {
		if path.Dir(f) != "/run/secrets" {
			t.Errorf("%s: secret file %q is not under /run/secrets", what, f)
		}
	}
	if len(c.Apps) == 0 || len(c.Clients) == 0 {
		t.Errorf("%s: want at least one app and one client", what)
	}
	nameRE := regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	for i, a := range c.Apps {
		if !nameRE.MatchString(a.Name) {
			t.Errorf("%s: apps[%d].name %q is not a valid app name", what, i, a.Name)
		}
		if a.ClientSecret != "" || a.CorpSecret != "" {
			t.Errorf("%s: apps[%d] has an inline secret: use a *_secret_file", what, i)
		}
		switch a.Type {
		case "dingtalk":
			if a.ClientID == "" || a.ClientSecretFile == "" {
				t.Errorf("%s: apps[%d] (dingtalk) needs client_id and client_secret_file", what, i)
			}
		case "dingtalk_corp":
			if a.CorpID == "" || a.CorpSecretFile == "" {
				t.Errorf("%s: apps[%d] (dingtalk_corp) needs corp_id and corp_secret_file", what, i)
			}
		default:
			t.Errorf("%s: apps[%d].type %q unknown", what, i, a.Type)
		}
		if a.JSAPITicket && (a.CorpID == "" || a.AgentID == "") {
			t.Errorf("%s: apps[%d] has jsapi_ticket without corp_id and agent_id", what, i)
		}
	}
}

// ---- Across the files ----

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOptionalListeners checks that the optional listeners have one port each everywhere: the Deployment
// declares them by name, the ConfigMap and Compose configs name those ports (commented out where the
// listener is off), Compose publishes the ones that are on, and config.example.yaml does not put both
// examples on one port.
func TestOptionalListeners(t *testing.T) {
	objs := kubernetesObjects(t)
	o := one(t, objs, "Deployment")
	var d deployment
	decodeNode(t, o.file, o.node, &d)
	declared := map[string]int{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		declared[p.Name] = p.ContainerPort
	}
	if declared["gateway"] != atoi(t, gatewayPort) || declared["callback"] != atoi(t, callbackPort) {
		t.Errorf("%s: container ports gateway %d, callback %d; want %s and %s", o.file, declared["gateway"], declared["callback"], gatewayPort, callbackPort)
	}

	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	c := one(t, objs, "ConfigMap")
	decodeNode(t, c.file, c.node, &cm)
	listener := func(text, key string) (port string, on bool) {
		m := regexp.MustCompile(`(?m)^\s*(#\s*)?` + key + `:\s*(\S+)`).FindStringSubmatch(text)
		if m == nil {
			t.Errorf("%s is not there, not even commented out", key)
			return "", false
		}
		_, port, err := net.SplitHostPort(m[2])
		if err != nil {
			t.Errorf("%s: %v", key, err)
		}
		return port, m[1] == ""
	}
	for _, cfg := range []struct{ what, text string }{
		{"configmap.yaml", cm.Data["config.yaml"]},
		{"deploy/compose/config.yaml", string(readFile(t, "deploy/compose/config.yaml"))},
	} {
		for _, l := range []struct{ key, port string }{{"gateway_listen", gatewayPort}, {"callback_listen", callbackPort}} {
			if port, _ := listener(cfg.text, l.key); port != l.port {
				t.Errorf("%s: %s on port %q, want %s", cfg.what, l.key, port, l.port)
			}
		}
	}

	// Compose publishes a listener that is on, on every replica, on loopback (TestComposeServices).
	compose := loadCompose(t)
	text := string(readFile(t, "deploy/compose/config.yaml"))
	for _, l := range []struct{ key, port string }{{"gateway_listen", gatewayPort}, {"callback_listen", callbackPort}} {
		if _, on := listener(text, l.key); !on {
			continue
		}
		for _, svc := range []string{"tokend-1", "tokend-2"} {
			if !slices.ContainsFunc(compose.Services[svc].Ports, func(p string) bool { return strings.HasSuffix(p, ":"+l.port) }) {
				t.Errorf("docker-compose.yml: %s does not publish %s's port %s", svc, l.key, l.port)
			}
		}
	}

	example := string(readFile(t, "config.example.yaml"))
	gw, _ := listener(example, "gateway_listen")
	cb, _ := listener(example, "callback_listen")
	if gw == cb {
		t.Errorf("config.example.yaml: gateway_listen and callback_listen examples share port %s", gw)
	}
}
