package deploy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

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
