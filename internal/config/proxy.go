package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokend/tokend/internal/proxyrule"
)

// Defaults and bounds of the proxy section.
const (
	DefaultProxyMaxRPS  = 300
	DefaultProxyMaxBody = 20 << 20
	DefaultProxyTimeout = 30 * time.Second
	// MaxEgressRPS bounds upstream.max_rps + proxy.max_rps: DingTalk bans an egress IP for 5 minutes
	// after 10 000 calls in 20 s (500/s); 450 leaves room for what else leaves through the IP.
	MaxEgressRPS    = 450
	maxProxyBody    = 1 << 30
	maxProxyTimeout = 5 * time.Minute
)

// Proxy configures the calls tokend makes to DingTalk for clients (the proxy routes and the gateway
// listener).
type Proxy struct {
	// MaxRPS is the budget of proxied calls per second, all replicas together. 1 ≤ MaxRPS and
	// upstream.max_rps + MaxRPS ≤ MaxEgressRPS.
	MaxRPS int
	// MaxBody is the largest request body forwarded, in bytes.
	MaxBody int64
	// Timeout bounds one proxied exchange with DingTalk.
	Timeout time.Duration
}

type rawProxy struct {
	MaxRPS  *float64 `yaml:"max_rps"`
	MaxBody string   `yaml:"max_body"`
	Timeout string   `yaml:"timeout"`
}

// proxy checks the proxy section and gateway_listen.
func (c *checker) proxy(raw *rawConfig, cfg *Config) {
	cfg.Proxy = Proxy{MaxRPS: DefaultProxyMaxRPS, MaxBody: DefaultProxyMaxBody}
	if v := raw.Proxy.MaxRPS; v != nil {
		if !(*v >= 1 && *v <= MaxEgressRPS && *v == math.Trunc(*v)) {
			c.addf("proxy.max_rps", "must be a whole number from 1 to %d, got %g", MaxEgressRPS, *v)
		} else {
			cfg.Proxy.MaxRPS = int(*v)
		}
	}
	if sum := cfg.Upstream.MaxRPS + float64(cfg.Proxy.MaxRPS); sum > MaxEgressRPS && cfg.Upstream.MaxRPS <= maxRPS {
		c.addf("proxy.max_rps", "upstream.max_rps (%g) + proxy.max_rps (%d) = %g must not exceed %d (DingTalk bans the egress IP above 500 calls/s)",
			cfg.Upstream.MaxRPS, cfg.Proxy.MaxRPS, sum, MaxEgressRPS)
	}
	if raw.Proxy.MaxBody != "" {
		n, err := ParseSize(raw.Proxy.MaxBody)
		switch {
		case err != nil:
			c.addf("proxy.max_body", "%s is not a size such as 20MiB, 512KiB or 1048576", shown(raw.Proxy.MaxBody))
		case n < 1 || n > maxProxyBody:
			c.addf("proxy.max_body", "%s must be from 1 byte to 1GiB", shown(raw.Proxy.MaxBody))
		default:
			cfg.Proxy.MaxBody = n
		}
	}
	cfg.Proxy.Timeout = c.duration("proxy.timeout", raw.Proxy.Timeout, DefaultProxyTimeout)
	if t := cfg.Proxy.Timeout; t <= 0 || t > maxProxyTimeout {
		c.addf("proxy.timeout", "%s must be more than 0 and at most %s", durationShown(raw.Proxy.Timeout, t), maxProxyTimeout)
	}

	cfg.GatewayListen = raw.Gateway
	if raw.Gateway == "" {
		return
	}
	gh, gp, ok := c.hostPort("gateway_listen", raw.Gateway, true)
	if !ok || gp == 0 {
		return
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	for _, other := range []struct{ key, addr string }{{"listen", cfg.Listen}, {"ops_listen", cfg.OpsListen}} {
		h, ps, err := splitHostPort(other.addr)
		if err == nil && ps == gp && (h == gh || wildcard(h) || wildcard(gh)) {
			c.addf("gateway_listen", "must differ from %s", other.key)
		}
	}
}

func splitHostPort(addr string) (string, int, error) {
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	return h, p, err
}

// clientProxy checks a client's proxy rules: each key a configured app, each rule valid.
func (c *checker) clientProxy(path string, raw map[string][]string, known map[string]int) map[string]proxyrule.Set {
	if len(raw) == 0 {
		return nil
	}
	out := make(map[string]proxyrule.Set, len(raw))
	// Sorted, so that problems come out in the same order every time.
	for _, app := range slices.Sorted(maps.Keys(raw)) {
		p := path + "." + app
		if _, ok := known[app]; !ok && !c.isBad("apps") {
			c.addf(p, "unknown app %s", shown(app))
			continue
		}
		if len(raw[app]) == 0 {
			c.add(p, "must list at least one rule")
			continue
		}
		var set proxyrule.Set
		for i, text := range raw[app] {
			r, err := proxyrule.Parse(text)
			if err != nil {
				c.add(fmt.Sprintf("%s[%d]", p, i), err.Error())
				continue
			}
			set = append(set, r)
		}
		out[app] = set
	}
	return out
}

// ParseSize parses a size in bytes: a whole number, optionally followed by B, KB, MB, GB (powers of
// 1000) or KiB, MiB, GiB (powers of 1024), e.g. "20MiB", "512KiB", "1048576".
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || i > 12 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	units := map[string]int64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
	mult, ok := units[strings.TrimSpace(s[i:])]
	if !ok {
		return 0, fmt.Errorf("bad size unit in %q", s)
	}
	return n * mult, nil
}
