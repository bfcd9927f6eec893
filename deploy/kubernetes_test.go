package deploy

import (
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

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
