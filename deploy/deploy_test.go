// Package deploy holds no Go code: its tests check the deployment artifacts (Dockerfile, .dockerignore,
// docker-compose.yml and deploy/...) without Docker, Kubernetes or Prometheus. They check that every file
// parses, carries the hardening and settings the README promises, and agrees with the other files and
// with the metrics contract. scripts/check-deploy.sh runs them together with promtool.
package deploy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
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

// ---- Kubernetes ----

type objectMeta struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace"`
	Labels    map[string]string `yaml:"labels"`
}

type manifest struct {
	APIVersion string     `yaml:"apiVersion"`
	Kind       string     `yaml:"kind"`
	Metadata   objectMeta `yaml:"metadata"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	Privileged               *bool  `yaml:"privileged"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
		Add  []string `yaml:"add"`
	} `yaml:"capabilities"`
	SeccompProfile struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	SecurityContext securityContext `yaml:"securityContext"`
	Resources       struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

// port resolves a probe's or service's port (a number or a container port name) to a number.
func (c *container) port(n yaml.Node) int {
	if p, err := strconv.Atoi(n.Value); err == nil {
		return p
	}
	for _, p := range c.Ports {
		if p.Name == n.Value {
			return p.ContainerPort
		}
	}
	return 0
}

type deployment struct {
	Spec struct {
		Replicas int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata objectMeta `yaml:"metadata"`
			Spec     struct {
				ServiceAccountName            string          `yaml:"serviceAccountName"`
				AutomountServiceAccountToken  *bool           `yaml:"automountServiceAccountToken"`
				TerminationGracePeriodSeconds *int            `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               securityContext `yaml:"securityContext"`
				TopologySpreadConstraints     []any           `yaml:"topologySpreadConstraints"`
				Affinity                      map[string]any  `yaml:"affinity"`
				Containers                    []container     `yaml:"containers"`
				Volumes                       []struct {
					Name   string `yaml:"name"`
					Secret *struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type service struct {
	Spec struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string    `yaml:"name"`
			Port       int       `yaml:"port"`
			TargetPort yaml.Node `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type npPeer struct {
	PodSelector *struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"podSelector"`
	NamespaceSelector *struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"namespaceSelector"`
	IPBlock *struct {
		CIDR   string   `yaml:"cidr"`
		Except []string `yaml:"except"`
	} `yaml:"ipBlock"`
}

type npPort struct {
	Protocol string `yaml:"protocol"`
	Port     int    `yaml:"port"`
}

type networkPolicy struct {
	Spec struct {
		PodSelector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"podSelector"`
		PolicyTypes []string `yaml:"policyTypes"`
		Ingress     []struct {
			From  []npPeer `yaml:"from"`
			Ports []npPort `yaml:"ports"`
		} `yaml:"ingress"`
		Egress []struct {
			To    []npPeer `yaml:"to"`
			Ports []npPort `yaml:"ports"`
		} `yaml:"egress"`
	} `yaml:"spec"`
}

type pdb struct {
	Spec struct {
		MinAvailable yaml.Node `yaml:"minAvailable"`
		Selector     struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	} `yaml:"spec"`
}

type k8sObject struct {
	file string
	manifest
	node *yaml.Node
}

// kubernetesObjects returns every object in deploy/kubernetes/*.yaml, kustomization.yaml included.
func kubernetesObjects(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/kubernetes/*.yaml (err %v)", err)
	}
	var objs []k8sObject
	for _, f := range files {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		rel = filepath.ToSlash(rel)
		for _, doc := range decodeDocs(t, rel) {
			var m manifest
			decodeNode(t, rel, doc, &m)
			if m.Kind == "" || m.APIVersion == "" {
				t.Errorf("%s: a document without kind or apiVersion", rel)
			}
			objs = append(objs, k8sObject{file: filepath.Base(f), manifest: m, node: doc})
		}
	}
	return objs
}

func ofKind(objs []k8sObject, kind string) []k8sObject {
	var out []k8sObject
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func one(t *testing.T, objs []k8sObject, kind string) k8sObject {
	t.Helper()
	got := ofKind(objs, kind)
	if len(got) != 1 {
		t.Fatalf("want exactly one %s in deploy/kubernetes, got %d", kind, len(got))
	}
	return got[0]
}

func TestKubernetesKinds(t *testing.T) {
	objs := kubernetesObjects(t)
	for _, kind := range []string{"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "ConfigMap", "Secret", "ServiceAccount", "Kustomization"} {
		t.Run(kind, func(t *testing.T) {
			if len(ofKind(objs, kind)) == 0 {
				t.Errorf("no %s in deploy/kubernetes", kind)
			}
		})
	}
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Kind != "Kustomization" && o.Metadata.Namespace != "tokend" {
			t.Errorf("%s: %s/%s has namespace %q, want tokend", o.file, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
	}
}

func TestKubernetesDeployment(t *testing.T) {
	objs := kubernetesObjects(t)
	o := one(t, objs, "Deployment")
	var d deployment
	decodeNode(t, o.file, o.node, &d)
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	isTrue := func(b *bool) bool { return b != nil && *b }
	isFalse := func(b *bool) bool { return b != nil && !*b }
	probeOn := func(p *probe, path string) bool {
		return p != nil && p.HTTPGet != nil && p.HTTPGet.Path == path && c.port(p.HTTPGet.Port) == 9090
	}
	mountedAt := func(mount string, ok func(i int) bool) bool {
		for _, m := range c.VolumeMounts {
			if m.MountPath != mount || !m.ReadOnly {
				continue
			}
			for i, v := range pod.Volumes {
				if v.Name == m.Name && ok(i) {
					return true
				}
			}
		}
		return false
	}
	resources := func(m map[string]string) bool { return m["cpu"] != "" && m["memory"] != "" }

	for _, check := range []struct {
		name string
		ok   bool
	}{
		{"replicas >= 2", d.Spec.Replicas >= 2},
		{"selector matches the pod labels", subset(d.Spec.Selector.MatchLabels, d.Spec.Template.Metadata.Labels)},
		{"automountServiceAccountToken false", isFalse(pod.AutomountServiceAccountToken)},
		{"terminationGracePeriodSeconds set", pod.TerminationGracePeriodSeconds != nil && *pod.TerminationGracePeriodSeconds >= 10},
		{"pod runAsNonRoot", isTrue(pod.SecurityContext.RunAsNonRoot)},
		{"pod runAsUser 65532", pod.SecurityContext.RunAsUser != nil && *pod.SecurityContext.RunAsUser == 65532},
		{"pod seccomp RuntimeDefault", pod.SecurityContext.SeccompProfile.Type == "RuntimeDefault"},
		{"spread across nodes", len(pod.TopologySpreadConstraints) > 0 || pod.Affinity["podAntiAffinity"] != nil},
		{"container readOnlyRootFilesystem", isTrue(c.SecurityContext.ReadOnlyRootFilesystem)},
		{"container allowPrivilegeEscalation false", isFalse(c.SecurityContext.AllowPrivilegeEscalation)},
		{"container drops ALL capabilities", slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") && len(c.SecurityContext.Capabilities.Add) == 0},
		{"container not privileged", !isTrue(c.SecurityContext.Privileged)},
		{"resource requests", resources(c.Resources.Requests)},
		{"resource limits", resources(c.Resources.Limits)},
		{"liveness probe on ops port /healthz", probeOn(c.LivenessProbe, "/healthz")},
		{"readiness probe on ops port /readyz", probeOn(c.ReadinessProbe, "/readyz")},
		{"args -config /etc/tokend/config.yaml", slices.Equal(c.Args, []string{"-config", "/etc/tokend/config.yaml"})},
		{"secret volume read-only at /run/secrets", mountedAt("/run/secrets", func(i int) bool { return pod.Volumes[i].Secret != nil })},
		{"config volume read-only at /etc/tokend", mountedAt("/etc/tokend", func(i int) bool { return pod.Volumes[i].ConfigMap != nil })},
	} {
		t.Run(check.name, func(t *testing.T) {
			if !check.ok {
				t.Errorf("%s: want %s", o.file, check.name)
			}
		})
	}

	// The volumes name the ConfigMap and Secret that exist (the Secret as an example).
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil:
			if one(t, objs, "ConfigMap").Metadata.Name != v.ConfigMap.Name {
				t.Errorf("volume %s names ConfigMap %q, not the one in configmap.yaml", v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if one(t, objs, "Secret").Metadata.Name != v.Secret.SecretName {
				t.Errorf("volume %s names Secret %q, not the one in secret.example.yaml", v.Name, v.Secret.SecretName)
			}
		}
	}
	if sa := ofKind(objs, "ServiceAccount"); len(sa) == 1 && sa[0].Metadata.Name != pod.ServiceAccountName {
		t.Errorf("pod uses service account %q, not the one in serviceaccount.yaml", pod.ServiceAccountName)
	}
}

func podLabels(t *testing.T, objs []k8sObject) map[string]string {
	t.Helper()
	o := one(t, objs, "Deployment")
	var d deployment
	decodeNode(t, o.file, o.node, &d)
	return d.Spec.Template.Metadata.Labels
}

func TestKubernetesServices(t *testing.T) {
	objs := kubernetesObjects(t)
	labels := podLabels(t, objs)
	gw, cb := atoi(t, gatewayPort), atoi(t, callbackPort)
	targets := map[string]int{"http": 8080, "ops": 9090, "gateway": gw, "callback": cb}
	exposed := map[int]bool{}
	for _, o := range ofKind(objs, "Service") {
		var s service
		decodeNode(t, o.file, o.node, &s)
		if !subset(s.Spec.Selector, labels) {
			t.Errorf("service %s: selector does not match the tokend pods", o.Metadata.Name)
		}
		ports := map[int]bool{}
		for _, p := range s.Spec.Ports {
			tp := p.TargetPort.Value
			if n, ok := targets[tp]; ok {
				ports[n] = true
			} else if n, err := strconv.Atoi(tp); err == nil {
				ports[n] = true
			}
		}
		// The callback listener is published to DingTalk (through an Ingress): its Service carries
		// nothing else.
		if ports[cb] && len(ports) > 1 {
			t.Errorf("service %s: the callback port %d shares a Service with other ports", o.Metadata.Name, cb)
		}
		for n := range ports {
			exposed[n] = true
		}
	}
	for _, port := range []int{8080, 9090, gw, cb} {
		if !exposed[port] {
			t.Errorf("no Service targets container port %d", port)
		}
	}
}

func TestKubernetesNetworkPolicy(t *testing.T) {
	objs := kubernetesObjects(t)
	o := one(t, objs, "NetworkPolicy")
	var np networkPolicy
	decodeNode(t, o.file, o.node, &np)
	if !subset(np.Spec.PodSelector.MatchLabels, podLabels(t, objs)) {
		t.Errorf("podSelector does not select the tokend pods")
	}
	for _, pt := range []string{"Ingress", "Egress"} {
		if !slices.Contains(np.Spec.PolicyTypes, pt) {
			t.Errorf("policyTypes lacks %s", pt)
		}
	}

	// Every ingress rule names its port and its sources; who may reach which port.
	client := func(p npPeer) bool {
		return p.PodSelector != nil && p.PodSelector.MatchLabels["tokend-client"] == "true" && p.IPBlock == nil
	}
	allowed := map[int]func(npPeer) bool{
		8080:                 client,
		atoi(t, gatewayPort): client, // the gateway serves the same clients with the same keys
		9090: func(p npPeer) bool {
			return p.PodSelector != nil && p.PodSelector.MatchLabels["app.kubernetes.io/name"] == "prometheus" &&
				p.NamespaceSelector != nil && len(p.NamespaceSelector.MatchLabels) > 0
		},
		// DingTalk's pushes arrive through the ingress controller: pods of a named namespace, not the
		// whole Internet nor the client pods.
		atoi(t, callbackPort): func(p npPeer) bool {
			return p.PodSelector != nil && len(p.PodSelector.MatchLabels) > 0 && p.PodSelector.MatchLabels["tokend-client"] == "" &&
				p.NamespaceSelector != nil && len(p.NamespaceSelector.MatchLabels) > 0 && p.IPBlock == nil
		},
	}
	reached := map[int]bool{}
	for i, r := range np.Spec.Ingress {
		if len(r.Ports) == 0 || len(r.From) == 0 {
			t.Errorf("ingress[%d] allows every port or every source", i)
			continue
		}
		for _, port := range r.Ports {
			ok := allowed[port.Port]
			if ok == nil {
				t.Errorf("ingress[%d] opens port %d", i, port.Port)
				continue
			}
			for j, peer := range r.From {
				if !ok(peer) {
					t.Errorf("ingress[%d].from[%d] is not an allowed source for port %d", i, j, port.Port)
				}
			}
			reached[port.Port] = true
		}
	}
	for port := range allowed {
		if !reached[port] {
			t.Errorf("no ingress rule admits port %d", port)
		}
	}

	egress := map[int]bool{}
	for i, r := range np.Spec.Egress {
		if len(r.Ports) == 0 {
			t.Errorf("egress[%d] allows every port", i)
		}
		for _, p := range r.Ports {
			egress[p.Port] = true
		}
	}
	for _, port := range []int{53, 6379, 443} {
		if !egress[port] {
			t.Errorf("no egress rule for port %d", port)
		}
	}
}

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

func TestKubernetesPDB(t *testing.T) {
	objs := kubernetesObjects(t)
	o := one(t, objs, "PodDisruptionBudget")
	var p pdb
	decodeNode(t, o.file, o.node, &p)
	if p.Spec.MinAvailable.Value != "1" {
		t.Errorf("minAvailable = %q, want 1", p.Spec.MinAvailable.Value)
	}
	if !subset(p.Spec.Selector.MatchLabels, podLabels(t, objs)) {
		t.Errorf("selector does not match the tokend pods")
	}
}

func TestKubernetesConfigAndSecret(t *testing.T) {
	objs := kubernetesObjects(t)
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	o := one(t, objs, "ConfigMap")
	decodeNode(t, o.file, o.node, &cm)
	raw, ok := cm.Data["config.yaml"]
	if !ok {
		t.Fatalf("ConfigMap has no config.yaml")
	}
	cfg := parseTokendConfig(t, "configmap.yaml config.yaml", []byte(raw))
	checkContainerConfig(t, "configmap.yaml", cfg)
	for _, base := range []string{cfg.DingTalk.APIBase, cfg.DingTalk.OAPIBase} {
		if u, err := url.Parse(base); base != "" && (err != nil || u.Scheme != "https") {
			t.Errorf("configmap.yaml: DingTalk base %q is not https", base)
		}
	}

	var sec struct {
		StringData map[string]string `yaml:"stringData"`
		Data       map[string]string `yaml:"data"`
	}
	s := one(t, objs, "Secret")
	decodeNode(t, s.file, s.node, &sec)
	if len(sec.Data) > 0 {
		t.Errorf("%s: use stringData placeholders, not data", s.file)
	}
	for k, v := range sec.StringData {
		if !strings.Contains(v, "REPLACE") {
			t.Errorf("%s: key %s does not hold a REPLACE placeholder", s.file, k)
		}
	}
	// Every secret file the config reads is a key of the Secret mounted at /run/secrets.
	for _, f := range cfg.secretFiles() {
		if _, ok := sec.StringData[path.Base(f)]; !ok {
			t.Errorf("config reads %s but the Secret has no key %q", f, path.Base(f))
		}
	}
}

func TestKustomization(t *testing.T) {
	var k struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	decodeYAML(t, "deploy/kubernetes/kustomization.yaml", &k)
	if k.Namespace != "tokend" {
		t.Errorf("namespace = %q, want tokend", k.Namespace)
	}
	files, err := filepath.Glob(filepath.Join(root, "deploy", "kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		listed := slices.Contains(k.Resources, base)
		switch base {
		case "kustomization.yaml":
		case "secret.example.yaml":
			if listed {
				t.Errorf("secret.example.yaml is listed: apply -k would overwrite the real secrets with placeholders")
			}
		default:
			if !listed {
				t.Errorf("%s is not listed in kustomization.yaml", base)
			}
		}
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join(root, "deploy", "kubernetes", r)); err != nil {
			t.Errorf("resource %s: %v", r, err)
		}
	}
}

// ---- Docker Compose ----

type composeVolume struct {
	Type     string `yaml:"type"`
	Source   string `yaml:"source"`
	Target   string `yaml:"target"`
	ReadOnly bool   `yaml:"read_only"`
}

type composeService struct {
	Image       string          `yaml:"image"`
	Entrypoint  []string        `yaml:"entrypoint"`
	Command     []string        `yaml:"command"`
	User        string          `yaml:"user"`
	ReadOnly    bool            `yaml:"read_only"`
	CapDrop     []string        `yaml:"cap_drop"`
	SecurityOpt []string        `yaml:"security_opt"`
	Ports       []string        `yaml:"ports"`
	Volumes     []composeVolume `yaml:"volumes"`
	Secrets     []string        `yaml:"secrets"`
	Healthcheck map[string]any  `yaml:"healthcheck"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

func loadCompose(t *testing.T) *composeFile {
	t.Helper()
	var c composeFile
	decodeYAML(t, "docker-compose.yml", &c)
	return &c
}

// composeSecret returns the contents of the compose secret that a service sees at /run/secrets/name.
func composeSecret(t *testing.T, c *composeFile, name string) string {
	t.Helper()
	s, ok := c.Secrets[name]
	if !ok {
		t.Fatalf("compose secret %q not declared", name)
	}
	return string(readFile(t, s.File))
}

func TestComposeServices(t *testing.T) {
	c := loadCompose(t)
	for _, name := range []string{"redis", "fakedingtalk", "tokend-1", "tokend-2", "prometheus"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	if len(c.Secrets) == 0 {
		t.Fatalf("no top-level secrets")
	}
	for name, s := range c.Secrets {
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(s.File))); err != nil {
			t.Errorf("secret %s: %v", name, err)
		}
		if !strings.HasPrefix(path.Base(s.File), "DEMO-ONLY_") {
			t.Errorf("secret %s: file %s is not named DEMO-ONLY_*", name, s.File)
		}
	}

	hostPorts := map[string]string{}
	for name, s := range c.Services {
		for _, ref := range s.Secrets {
			if _, ok := c.Secrets[ref]; !ok {
				t.Errorf("service %s uses undeclared secret %s", name, ref)
			}
		}
		for _, p := range s.Ports {
			hostIP, rest, _ := strings.Cut(p, ":")
			hostPort, _, _ := strings.Cut(rest, ":")
			if hostIP != "127.0.0.1" {
				t.Errorf("service %s publishes %q beyond loopback", name, p)
			}
			if other, dup := hostPorts[hostPort]; dup {
				t.Errorf("host port %s published by both %s and %s", hostPort, other, name)
			}
			hostPorts[hostPort] = name
		}
	}

	for _, name := range []string{"tokend-1", "tokend-2"} {
		t.Run(name, func(t *testing.T) {
			s := c.Services[name]
			if !s.ReadOnly {
				t.Errorf("read_only not set")
			}
			if !slices.Equal(s.CapDrop, []string{"ALL"}) {
				t.Errorf("cap_drop = %v, want [ALL]", s.CapDrop)
			}
			if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("security_opt lacks no-new-privileges:true")
			}
			if len(s.Ports) == 0 {
				t.Errorf("API not published")
			}
			cfgMount := composeVolume{Type: "bind", Source: "./deploy/compose/config.yaml", Target: "/etc/tokend/config.yaml", ReadOnly: true}
			if !slices.Contains(s.Volumes, cfgMount) {
				t.Errorf("config not bind-mounted read-only from deploy/compose/config.yaml")
			}
			if len(s.Secrets) == 0 {
				t.Errorf("uses no secrets")
			}
		})
	}
	if fake := c.Services["fakedingtalk"]; !slices.Equal(fake.Entrypoint, []string{"/fakedingtalk"}) || fake.Healthcheck["disable"] != true {
		t.Errorf("fakedingtalk: want entrypoint [/fakedingtalk] and the image healthcheck disabled")
	}
}

// TestComposeDemoConsistency checks that the demo values agree across files: the config's secret files are
// given to both replicas, the fake knows the apps with the same secrets, Redis has the password tokend
// sends, and the client key in the README hashes to the config's key_sha256. No value is printed.
func TestComposeDemoConsistency(t *testing.T) {
	c := loadCompose(t)
	cfg := parseTokendConfig(t, "deploy/compose/config.yaml", readFile(t, "deploy/compose/config.yaml"))
	checkContainerConfig(t, "deploy/compose/config.yaml", cfg)

	for _, f := range cfg.secretFiles() {
		for _, svc := range []string{"tokend-1", "tokend-2"} {
			if !slices.Contains(c.Services[svc].Secrets, path.Base(f)) {
				t.Errorf("config reads %s but %s does not get secret %s", f, svc, path.Base(f))
			}
		}
	}

	// DingTalk bases point at the fake's listen port.
	fake := c.Services["fakedingtalk"]
	i := slices.Index(fake.Command, "-listen")
	if i < 0 || i+1 >= len(fake.Command) {
		t.Fatalf("fakedingtalk command has no -listen")
	}
	_, fakePort, _ := net.SplitHostPort(fake.Command[i+1])
	for _, base := range []string{cfg.DingTalk.APIBase, cfg.DingTalk.OAPIBase} {
		u, err := url.Parse(base)
		if err != nil || u.Hostname() != "fakedingtalk" || u.Port() != fakePort {
			t.Errorf("DingTalk base %q does not point at fakedingtalk:%s", base, fakePort)
		}
	}

	// The fake accepts exactly the demo apps' client_id and secret.
	i = slices.Index(fake.Command, "-apps-file")
	if i < 0 || i+1 >= len(fake.Command) {
		t.Fatalf("fakedingtalk command has no -apps-file")
	}
	fakeApps := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(composeSecret(t, c, path.Base(fake.Command[i+1]))))
	for sc.Scan() {
		if key, secret, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			fakeApps[key] = secret
		}
	}
	for _, a := range cfg.Apps {
		secret, ok := fakeApps[a.ClientID]
		if !ok {
			t.Errorf("app %s: the fake does not know client_id %s", a.Name, a.ClientID)
			continue
		}
		if secret != composeSecret(t, c, path.Base(a.ClientSecretFile)) {
			t.Errorf("app %s: the fake's secret differs from %s (values not shown)", a.Name, a.ClientSecretFile)
		}
	}

	// Redis requires the password tokend sends.
	pw := composeSecret(t, c, path.Base(cfg.Store.Redis.PasswordFile))
	var required string
	for _, line := range strings.Split(composeSecret(t, c, "redis_conf"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "requirepass "); ok {
			required = strings.TrimSpace(v)
		}
	}
	if required == "" || required != pw {
		t.Errorf("redis requirepass differs from the password file tokend reads (values not shown)")
	}
	if u, err := url.Parse(cfg.Store.Redis.URL); err != nil || u.Hostname() != "redis" || u.User != nil {
		t.Errorf("store.redis.url should be redis://redis:6379/... with no password in it")
	}

	// The documented demo key hashes to the configured key_sha256.
	m := regexp.MustCompile(`(?m)^export TOKEND_KEY=(\S+)$`).FindSubmatch(readFile(t, "deploy/compose/README.md"))
	if m == nil {
		t.Fatalf("deploy/compose/README.md does not document the demo key as export TOKEND_KEY=...")
	}
	sum := sha256.Sum256(m[1])
	if len(cfg.Clients) == 0 || cfg.Clients[0].KeySHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("the README's demo key does not hash to clients[0].key_sha256")
	}
}

func TestPrometheusScrapeConfigs(t *testing.T) {
	type scrape struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
			KubernetesSDConfigs []any `yaml:"kubernetes_sd_configs"`
		} `yaml:"scrape_configs"`
		RuleFiles []string `yaml:"rule_files"`
	}
	var compose scrape
	decodeYAML(t, "deploy/compose/prometheus.yml", &compose)
	if len(compose.ScrapeConfigs) != 1 || compose.ScrapeConfigs[0].JobName != "tokend" {
		t.Fatalf("deploy/compose/prometheus.yml: want one scrape job named tokend")
	}
	var targets []string
	for _, sc := range compose.ScrapeConfigs[0].StaticConfigs {
		targets = append(targets, sc.Targets...)
	}
	slices.Sort(targets)
	if !slices.Equal(targets, []string{"tokend-1:9090", "tokend-2:9090"}) {
		t.Errorf("compose scrape targets = %v, want both replicas' ops ports", targets)
	}
	// The alert rules are mounted where rule_files looks.
	c := loadCompose(t)
	var rulesTarget string
	for _, v := range c.Services["prometheus"].Volumes {
		if v.Source == "./deploy/prometheus/alerts.yaml" && v.ReadOnly {
			rulesTarget = v.Target
		}
	}
	matched := false
	for _, pattern := range compose.RuleFiles {
		if ok, _ := path.Match(pattern, rulesTarget); ok && rulesTarget != "" {
			matched = true
		}
	}
	if !matched {
		t.Errorf("alerts.yaml is not mounted read-only where rule_files %v looks", compose.RuleFiles)
	}

	var k8s scrape
	decodeYAML(t, "deploy/prometheus/kubernetes-scrape-config.yaml", &k8s)
	if len(k8s.ScrapeConfigs) != 1 || k8s.ScrapeConfigs[0].JobName != "tokend" || len(k8s.ScrapeConfigs[0].KubernetesSDConfigs) == 0 {
		t.Errorf("kubernetes-scrape-config.yaml: want one kubernetes_sd scrape job named tokend")
	}
}

// ---- Dockerfile ----

type dockerInstr struct {
	cmd  string // upper case
	args string
}

// dockerStages splits a Dockerfile into stages of instructions, joining continuation lines.
func dockerStages(t *testing.T) [][]dockerInstr {
	t.Helper()
	var stages [][]dockerInstr
	var logical strings.Builder
	flush := func() {
		line := strings.TrimSpace(logical.String())
		logical.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := dockerInstr{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
	}
	for _, line := range strings.Split(string(readFile(t, "Dockerfile")), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if body, cont := strings.CutSuffix(trimmed, "\\"); cont {
			logical.WriteString(body + " ")
			continue
		}
		logical.WriteString(trimmed)
		flush()
	}
	flush()
	return stages
}

func TestDockerfile(t *testing.T) {
	stages := dockerStages(t)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}
	find := func(stage []dockerInstr, cmd string) []string {
		var out []string
		for _, in := range stage {
			if in.cmd == cmd {
				out = append(out, in.args)
			}
		}
		return out
	}
	var builds []string
	for _, st := range stages[:len(stages)-1] {
		builds = append(builds, find(st, "RUN")...)
	}
	buildRuns := strings.Join(builds, "\n")
	final := stages[len(stages)-1]

	users := find(final, "USER")
	user := ""
	if len(users) > 0 {
		user, _, _ = strings.Cut(users[len(users)-1], ":")
	}
	for _, check := range []struct {
		name string
		ok   bool
	}{
		{"build with CGO_ENABLED=0", strings.Contains(buildRuns, "CGO_ENABLED=0")},
		{"build with -trimpath", strings.Contains(buildRuns, "-trimpath")},
		{"version stamped with -X main.version=", strings.Contains(buildRuns, "-X main.version=")},
		{"builds ./cmd/tokend", strings.Contains(buildRuns, "./cmd/tokend")},
		{"builds ./cmd/fakedingtalk", strings.Contains(buildRuns, "./cmd/fakedingtalk")},
		{"final stage on distroless static nonroot", strings.Contains(final[0].args, "gcr.io/distroless/static") && strings.Contains(final[0].args, "nonroot")},
		{"final stage USER is non-root", user != "" && user != "0" && user != "root"},
		{"EXPOSE 8080 9090", strings.Join(find(final, "EXPOSE"), " ") == "8080 9090"},
		{"HEALTHCHECK runs tokend healthcheck", strings.Contains(strings.Join(find(final, "HEALTHCHECK"), ""), `CMD ["/tokend", "healthcheck"]`)},
		{`ENTRYPOINT ["/tokend"]`, slices.Equal(find(final, "ENTRYPOINT"), []string{`["/tokend"]`})},
		{"CMD -config /etc/tokend/config.yaml", slices.Equal(find(final, "CMD"), []string{`["-config", "/etc/tokend/config.yaml"]`})},
	} {
		t.Run(check.name, func(t *testing.T) {
			if !check.ok {
				t.Errorf("Dockerfile: want %s", check.name)
			}
		})
	}
}

// dockerignored reports whether .dockerignore keeps p out of the build context (last matching pattern
// wins; a pattern matching a parent directory matches its contents). Enough for the patterns used here.
func dockerignored(patterns []string, p string) bool {
	ignored := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimSuffix(strings.TrimPrefix(pat, "!"), "/")
		for prefix := p; prefix != "." && prefix != "/"; prefix = path.Dir(prefix) {
			if ok, _ := path.Match(pat, prefix); ok {
				ignored = !neg
				break
			}
		}
	}
	return ignored
}

func TestDockerignore(t *testing.T) {
	var patterns []string
	for _, line := range strings.Split(string(readFile(t, ".dockerignore")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	for _, tc := range []struct {
		path    string
		ignored bool
	}{
		{".git/config", true},
		{".env", true},
		{"deploy/compose/secrets/DEMO-ONLY_redis_password", true},
		{"docker-compose.yml", true},
		{"go.mod", false},
		{"go.sum", false},
		{"cmd/tokend/main.go", false},
		{"internal/token/token.go", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := dockerignored(patterns, tc.path); got != tc.ignored {
				t.Errorf("ignored = %v, want %v", got, tc.ignored)
			}
		})
	}
}

// ---- Prometheus rules ----

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// wantAlerts are the alerts the README's Alerts section documents.
func wantAlerts() []string {
	return []string{
		"TokendNoValidToken", "TokendRefreshFailing", "TokendTokenExpiringSoon",
		"TokendUpstreamCredentialsRejected", "TokendUpstreamIPNotAllowed", "TokendIPBanned",
		"TokendStoreDown", "TokendHighInvalidationRate", "TokendDown", "TokendAllReplicasDown",
		"TokendHighErrorRate",
	}
}

func TestAlertRules(t *testing.T) {
	var rf ruleFile
	decodeYAML(t, "deploy/prometheus/alerts.yaml", &rf)
	if len(rf.Groups) != 1 || rf.Groups[0].Name != "tokend" {
		t.Fatalf("want one rule group named tokend")
	}
	contract, planned := contractMetrics(), plannedMetrics()
	var names []string
	for _, r := range rf.Groups[0].Rules {
		if r.Alert == "" {
			t.Errorf("rule %q is not an alert", r.Record)
			continue
		}
		names = append(names, r.Alert)
		t.Run(r.Alert, func(t *testing.T) {
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("severity = %q, want critical or warning", s)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("annotation %s missing", a)
				}
			}
			if r.Annotations["runbook"] != "README.md#alerts" {
				t.Errorf("runbook = %q, want README.md#alerts", r.Annotations["runbook"])
			}
			usesContract := false
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				switch base := baseMetric(m); {
				case hasKey(contract, base):
					usesContract = true
				case planned[base]:
				default:
					t.Errorf("expr uses %s, which is not a contract metric", m)
				}
			}
			if !usesContract && !strings.Contains(r.Expr, "up{") {
				t.Errorf("expr does not rest on a contract metric (a planned metric alone is not enough)")
			}
		})
	}
	for _, want := range wantAlerts() {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s missing", want)
		}
	}
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}

// TestAlertUnitTests checks that alerts_test.yaml (run by promtool in scripts/check-deploy.sh) tests the
// key alerts both firing and not firing.
func TestAlertUnitTests(t *testing.T) {
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				AlertName string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	decodeYAML(t, "deploy/prometheus/alerts_test.yaml", &tf)
	if !slices.Equal(tf.RuleFiles, []string{"alerts.yaml"}) {
		t.Errorf("rule_files = %v, want [alerts.yaml]", tf.RuleFiles)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, g := range tf.Tests {
		for _, a := range g.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.AlertName] = true
			} else {
				silent[a.AlertName] = true
			}
		}
	}
	for _, name := range wantAlerts() {
		t.Run(name, func(t *testing.T) {
			if !fires[name] || !silent[name] {
				t.Errorf("want a test where it fires (%v) and one where it does not (%v)", fires[name], silent[name])
			}
		})
	}
}

// ---- Grafana ----

func TestDashboard(t *testing.T) {
	var dash map[string]any
	if err := json.Unmarshal(readFile(t, "deploy/grafana/tokend-dashboard.json"), &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion = %v, want >= 36", dash["schemaVersion"])
	}
	if uid, _ := dash["uid"].(string); uid == "" {
		t.Errorf("dashboard has no uid")
	}

	var exprs []string
	var badDS []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if key == "datasource" {
				if typ, uid := v["type"], v["uid"]; typ != "grafana" && (typ != "prometheus" || uid != "${DS_PROMETHEUS}") {
					badDS = append(badDS, fmt.Sprintf("%v/%v", typ, uid))
				}
			}
			for k, c := range v {
				walk(k, c)
			}
		case []any:
			for _, c := range v {
				walk(key, c)
			}
		case string:
			if key == "expr" || key == "definition" {
				exprs = append(exprs, v)
			}
		}
	}
	walk("", dash)
	if len(badDS) > 0 {
		t.Errorf("datasources other than ${DS_PROMETHEUS}: %v", badDS)
	}

	contract := contractMetrics()
	used := map[string]bool{}
	for _, e := range exprs {
		for _, m := range metricRE.FindAllString(e, -1) {
			base := baseMetric(m)
			if !hasKey(contract, base) {
				t.Errorf("dashboard uses %s, which is not a contract metric", m)
			}
			used[base] = true
		}
	}
	for m := range contract {
		if !used[m] {
			t.Errorf("dashboard does not show %s", m)
		}
	}

	templating, _ := dash["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	hasDS := false
	for _, v := range list {
		if v, _ := v.(map[string]any); v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" {
			hasDS = true
		}
	}
	if !hasDS {
		t.Errorf("no datasource variable DS_PROMETHEUS")
	}

	ids := map[float64]bool{}
	panels, _ := dash["panels"].([]any)
	if len(panels) == 0 {
		t.Fatalf("no panels")
	}
	for _, p := range panels {
		p, _ := p.(map[string]any)
		id, _ := p["id"].(float64)
		if ids[id] {
			t.Errorf("panel id %v used twice", id)
		}
		ids[id] = true
	}
}
