package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The raw types mirror the file. Secret sources and max_rps are pointers so that "given but empty"
// differs from "not given".
type rawConfig struct {
	Listen    string      `yaml:"listen"`
	OpsListen string      `yaml:"ops_listen"`
	Gateway   string      `yaml:"gateway_listen"`
	Proxy     rawProxy    `yaml:"proxy"`
	Log       rawLog      `yaml:"log"`
	Store     rawStore    `yaml:"store"`
	Refresh   rawRefresh  `yaml:"refresh"`
	Upstream  rawUpstream `yaml:"upstream"`
	DingTalk  rawDingTalk `yaml:"dingtalk"`
	TLS       *rawTLS     `yaml:"tls"`
	RateLimit rawLimit    `yaml:"rate_limit"`
	Apps      []rawApp    `yaml:"apps"`
	Clients   []rawClient `yaml:"clients"`
	Debug     rawDebug    `yaml:"debug"`
	// CallbackListen is the third-party apps' callback listener (isv.go).
	CallbackListen string     `yaml:"callback_listen"`
	Robots         []rawRobot `yaml:"robots"`
}

type rawTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

type rawLimit struct {
	RPS   *float64 `yaml:"rps"`
	Burst *int     `yaml:"burst"`
}

type rawLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type rawStore struct {
	Redis *rawRedis `yaml:"redis"`
}

type rawRedis struct {
	URL          string   `yaml:"url"`
	Addrs        []string `yaml:"addrs"`
	MasterName   string   `yaml:"master_name"`
	PasswordFile *string  `yaml:"password_file"`
	KeyPrefix    string   `yaml:"key_prefix"`
}

type rawRefresh struct {
	Margin string `yaml:"margin"`
}

type rawUpstream struct {
	Timeout      string   `yaml:"timeout"`
	FailureRetry string   `yaml:"failure_retry"`
	MaxRPS       *float64 `yaml:"max_rps"`
}

type rawDingTalk struct {
	APIBase  string `yaml:"api_base"`
	OAPIBase string `yaml:"oapi_base"`
}

type rawApp struct {
	Name             string  `yaml:"name"`
	Type             string  `yaml:"type"`
	ClientID         string  `yaml:"client_id"`
	ClientSecretFile *string `yaml:"client_secret_file"`
	ClientSecretEnv  *string `yaml:"client_secret_env"`
	ClientSecret     *string `yaml:"client_secret"`
	TokenAPI         string  `yaml:"token_api"`
	JSAPITicket      bool    `yaml:"jsapi_ticket"`
	CorpID           string  `yaml:"corp_id"`
	AgentID          string  `yaml:"agent_id"`
	SignatureHash    string  `yaml:"signature_hash"`
	CorpSecretFile   *string `yaml:"corp_secret_file"`
	CorpSecretEnv    *string `yaml:"corp_secret_env"`
	CorpSecret       *string `yaml:"corp_secret"`
	// Third-party (ISV) and custom apps (isv.go).
	SuiteKey        string       `yaml:"suite_key"`
	SuiteSecretFile *string      `yaml:"suite_secret_file"`
	SuiteSecretEnv  *string      `yaml:"suite_secret_env"`
	SuiteSecret     *string      `yaml:"suite_secret"`
	SuiteTicket     *string      `yaml:"suite_ticket"`
	Callback        *rawCallback `yaml:"callback"`
	Corps           []string     `yaml:"corps"`
}

type rawClient struct {
	Name      string    `yaml:"name"`
	KeySHA256 string    `yaml:"key_sha256"`
	CertNames []string  `yaml:"cert_names"`
	Apps      []string  `yaml:"apps"`
	RateLimit *rawLimit `yaml:"rate_limit"`
	// SuiteTickets names the apps whose suite tickets the client may hand in (isv.go).
	SuiteTickets []string `yaml:"suite_tickets"`
	// Part 2 permissions (flows.go, proxy.go).
	UserTokens []string            `yaml:"user_tokens"`
	Streams    []string            `yaml:"streams"`
	Robots     []string            `yaml:"robots"`
	Proxy      map[string][]string `yaml:"proxy"`
}

// decode decodes data strictly. It returns a nil *rawConfig when nothing useful could be decoded
// (syntax error, empty file, not a mapping); otherwise the raw config, possibly partial, and a
// checker that already holds the structural problems (unknown keys, wrong types), whose paths are
// marked bad so that validation does not report them a second time.
func decode(data []byte) (*rawConfig, *checker) {
	c := &checker{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var raw rawConfig
	err := dec.Decode(&raw)
	var terr *yaml.TypeError
	switch {
	case errors.Is(err, io.EOF):
		c.add("", "the configuration is empty")
		return nil, c
	case errors.As(err, &terr):
		// The decoder's messages name neither the field path nor, reliably, nothing of the value
		// (it quotes scalars), so the problems are rebuilt from the node tree.
		var doc yaml.Node
		if uerr := yaml.Unmarshal(data, &doc); uerr != nil {
			c.add("", uerr.Error())
			return nil, c
		}
		w := walker{c: c}
		if len(doc.Content) > 0 {
			w.walk(doc.Content[0], reflect.TypeFor[rawConfig](), "")
		}
		if len(c.problems) == 0 {
			// Never expected: the walker checks what the decoder checks.
			c.addBad("", "the configuration does not have the expected structure")
		}
		if c.isBad("") {
			return nil, c
		}
	case err != nil:
		// A syntax error: its message carries the line and no value.
		c.add("", err.Error())
		return nil, c
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		c.add("", "the file holds more than one YAML document")
	}
	return &raw, c
}

// walker checks a YAML node tree against the shape of a raw type, reporting unknown keys, duplicate
// keys and values of the wrong kind with their path and line, and never quoting a value.
type walker struct {
	c *checker
}

func (w walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // null leaves the zero value, as the decoder does
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			what := "must be a mapping"
			if path == "" {
				what = "the configuration must be a mapping of keys"
			}
			w.c.addBad(path, fmt.Sprintf("line %d: %s", n.Line, what))
			return
		}
		fields := make(map[string]reflect.Type, t.NumField())
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fields[name] = f.Type
		}
		seen := make(map[string]int)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				w.c.addBad(path, fmt.Sprintf("line %d: keys must be plain names", k.Line))
				continue
			}
			p := join(path, k.Value)
			if k.Value == "<<" {
				w.c.addBad(path, fmt.Sprintf("line %d: merge keys (<<) are not supported", k.Line))
				continue
			}
			if first, dup := seen[k.Value]; dup {
				w.c.addBad(p, fmt.Sprintf("line %d: duplicate key (first at line %d)", k.Line, first))
				continue
			}
			seen[k.Value] = k.Line
			ft, ok := fields[k.Value]
			if !ok {
				w.c.addBad(p, fmt.Sprintf("line %d: unknown key", k.Line))
				continue
			}
			w.walk(v, ft, p)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.c.addBad(path, fmt.Sprintf("line %d: must be a mapping", n.Line))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				w.c.addBad(path, fmt.Sprintf("line %d: keys must be plain names", k.Line))
				continue
			}
			w.walk(v, t.Elem(), join(path, k.Value))
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.c.addBad(path, fmt.Sprintf("line %d: must be a list", n.Line))
			return
		}
		for i, e := range n.Content {
			w.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		want := map[reflect.Kind]string{
			reflect.String:  "a string",
			reflect.Bool:    "true or false",
			reflect.Float64: "a number",
		}[t.Kind()]
		if n.Kind != yaml.ScalarNode {
			w.c.addBad(path, fmt.Sprintf("line %d: must be %s", n.Line, want))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			w.c.addBad(path, fmt.Sprintf("line %d: must be %s", n.Line, want))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
