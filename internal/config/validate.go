package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tokend/tokend/internal/dingtalk"
	"github.com/tokend/tokend/internal/signature"
)

var (
	appNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	envNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	keyPrefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)
	digitsRE    = regexp.MustCompile(`^[0-9]{1,20}$`)
)

const (
	maxMargin  = 2 * time.Hour
	maxTimeout = 60 * time.Second
	minRetry   = time.Second
	// maxRPS stays under DingTalk's per-IP ban threshold (10 000 calls in 20 s).
	maxRPS = 500.0
)

// checker collects problems. Paths marked bad already have a structural problem; validation problems
// at or under them are dropped, since they would only repeat it.
type checker struct {
	problems []Problem
	bad      []string
	getenv   func(string) string
	readFile func(string) ([]byte, error)
}

func (c *checker) add(path, msg string) {
	if c.isBad(path) {
		return
	}
	c.problems = append(c.problems, Problem{Path: path, Message: msg})
}

func (c *checker) addf(path, format string, args ...any) {
	c.add(path, fmt.Sprintf(format, args...))
}

// addBad records a structural problem and marks path bad.
func (c *checker) addBad(path, msg string) {
	c.problems = append(c.problems, Problem{Path: path, Message: msg})
	c.bad = append(c.bad, path)
}

func (c *checker) isBad(path string) bool {
	for _, b := range c.bad {
		if b == "" || path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[") {
			return true
		}
	}
	return false
}

// config validates raw section by section and returns the configuration with defaults applied. Each
// section has one function; a new section adds one.
func (c *checker) config(raw *rawConfig) *Config {
	cfg := &Config{
		Listen:    or(raw.Listen, DefaultListen),
		OpsListen: or(raw.OpsListen, DefaultOpsListen),
		Debug:     raw.Debug.config(),
	}
	c.listeners(cfg.Listen, cfg.OpsListen)
	cfg.Log = c.log(raw.Log)
	if raw.Store.Redis != nil {
		cfg.Store.Redis = c.redis(raw.Store.Redis)
	}
	cfg.Refresh = c.refresh(raw.Refresh)
	cfg.Upstream = c.upstream(raw.Upstream)
	cfg.DingTalk = c.dingTalk(raw.DingTalk)
	var names map[string]int
	cfg.Apps, names = c.apps(raw.Apps)
	if raw.TLS != nil {
		cfg.TLS = c.tls(raw.TLS)
	}
	cfg.RateLimit = c.rateLimit("rate_limit", raw.RateLimit)
	cfg.Clients = c.clients(raw.Clients, names, cfg.TLS, cfg.RateLimit)
	c.flows(raw, cfg) // robots and the clients' user_tokens, streams, robots (flows.go)
	c.proxy(raw, cfg)
	c.isvTop(raw, cfg) // callback_listen (after gateway_listen) and the clients' suite_tickets (isv.go)
	return cfg
}

func (c *checker) log(raw rawLog) Log {
	l := Log{Level: or(raw.Level, DefaultLogLevel), Format: or(raw.Format, DefaultLogFormat)}
	c.oneOf("log.level", l.Level, "debug", "info", "warn", "error")
	c.oneOf("log.format", l.Format, "json", "text")
	return l
}

func (c *checker) refresh(raw rawRefresh) Refresh {
	r := Refresh{Margin: c.duration("refresh.margin", raw.Margin, DefaultMargin)}
	if m := r.Margin; m <= 0 || m >= maxMargin {
		c.addf("refresh.margin", "%s must be more than 0 and less than %s", durationShown(raw.Margin, m), maxMargin)
	}
	return r
}

func (c *checker) upstream(raw rawUpstream) Upstream {
	u := Upstream{MaxRPS: DefaultMaxRPS}
	u.Timeout = c.duration("upstream.timeout", raw.Timeout, DefaultTimeout)
	if t := u.Timeout; t <= 0 || t > maxTimeout {
		c.addf("upstream.timeout", "%s must be more than 0 and at most %s", durationShown(raw.Timeout, t), maxTimeout)
	}
	u.FailureRetry = c.duration("upstream.failure_retry", raw.FailureRetry, DefaultFailureRetry)
	if u.FailureRetry < minRetry {
		c.addf("upstream.failure_retry", "%s must be at least %s", durationShown(raw.FailureRetry, u.FailureRetry), minRetry)
	}
	if raw.MaxRPS != nil {
		u.MaxRPS = *raw.MaxRPS
		// Written so that NaN fails too.
		if !(u.MaxRPS > 0 && u.MaxRPS <= maxRPS) {
			c.addf("upstream.max_rps", "%g must be more than 0 and at most %g", u.MaxRPS, maxRPS)
		}
	}
	return u
}

func (c *checker) dingTalk(raw rawDingTalk) DingTalk {
	return DingTalk{
		APIBase:  c.baseURL("dingtalk.api_base", or(raw.APIBase, DefaultAPIBase)),
		OAPIBase: c.baseURL("dingtalk.oapi_base", or(raw.OAPIBase, DefaultOAPIBase)),
	}
}

// apps validates the apps and returns them with the index of each name.
func (c *checker) apps(raw []rawApp) ([]App, map[string]int) {
	if len(raw) == 0 {
		c.add("apps", "at least one app is required")
	}
	var apps []App
	names := make(map[string]int)
	for i, ra := range raw {
		app := c.app(fmt.Sprintf("apps[%d]", i), ra)
		if app.Name != "" {
			if j, dup := names[app.Name]; dup {
				c.addf(fmt.Sprintf("apps[%d].name", i), "duplicate app name %q (also apps[%d])", app.Name, j)
			} else {
				names[app.Name] = i
			}
		}
		apps = append(apps, app)
	}
	return apps, names
}

func (c *checker) listeners(listen, ops string) {
	lh, lp, lok := c.hostPort("listen", listen, true)
	oh, op, ook := c.hostPort("ops_listen", ops, true)
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	// Port 0 asks the kernel for a free port, so two ":0" listeners never clash.
	if lok && ook && lp == op && lp != 0 && (lh == oh || wildcard(lh) || wildcard(oh)) {
		c.addf("ops_listen", "%s must differ from listen (%s)", shown(ops), shown(listen))
	}
}

// hostPort checks a host:port address; port 0 is accepted only when allowZero.
func (c *checker) hostPort(path, addr string, allowZero bool) (host string, port int, ok bool) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		c.addf(path, "%s must be host:port", shown(addr))
		return "", 0, false
	}
	lowest := 1
	if allowZero {
		lowest = 0
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < lowest || port > 65535 {
		c.addf(path, "%s must be host:port with a port from %d to 65535", shown(addr), lowest)
		return "", 0, false
	}
	if hasControl(host) || strings.ContainsAny(host, " /") {
		c.addf(path, "%s must be host:port", shown(addr))
		return "", 0, false
	}
	return host, port, true
}

func (c *checker) duration(path, s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		c.addf(path, "%s is not a duration such as 30s, 10m or 1h30m", shown(s))
		return def
	}
	return d
}

// durationShown is a duration as the file wrote it, or as its default when the file left it out.
func durationShown(raw string, d time.Duration) string {
	if raw == "" {
		return d.String()
	}
	return shown(raw)
}

// oneOf adds a problem unless v is one of allowed.
func (c *checker) oneOf(path, v string, allowed ...string) bool {
	if slices.Contains(allowed, v) {
		return true
	}
	c.addf(path, "%s is not one of %s", shown(v), strings.Join(allowed, ", "))
	return false
}

// baseURL checks a DingTalk base URL and returns it without a trailing slash.
func (c *checker) baseURL(path, s string) string {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.addf(path, "%s must be an absolute http:// or https:// URL", urlShown(u, err))
		return s
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		c.addf(path, "%s must be scheme://host[:port] only, without user, path, query or fragment", urlShown(u, err))
		return s
	}
	return strings.TrimSuffix(s, "/")
}

func (c *checker) app(path string, ra rawApp) App {
	app := App{
		Name:          ra.Name,
		Type:          dingtalk.AppType(ra.Type),
		TokenAPI:      dingtalk.API(ra.TokenAPI),
		JSAPITicket:   ra.JSAPITicket,
		CorpID:        ra.CorpID,
		AgentID:       ra.AgentID,
		SignatureHash: signature.Hash(ra.SignatureHash),
	}
	if app.TokenAPI == "" {
		app.TokenAPI = DefaultTokenAPI
	}
	if app.SignatureHash == "" {
		app.SignatureHash = DefaultSignatureHash
	}
	switch {
	case ra.Name == "":
		c.add(path+".name", "is required")
	case !appNameRE.MatchString(ra.Name):
		c.addf(path+".name", "%s must match [a-z0-9][a-z0-9_-]{0,63}", shown(ra.Name))
	}
	c.oneOf(path+".token_api", app.TokenAPI.String(), TokenAPIV1.String(), TokenAPILegacy.String())
	c.oneOf(path+".signature_hash", string(app.SignatureHash), string(HashSHA1), string(HashSHA256))
	if ra.CorpID != "" && !printableID(ra.CorpID) {
		c.addf(path+".corp_id", "%s must not contain spaces or control characters", shown(ra.CorpID))
	}
	if ra.AgentID != "" && !digitsRE.MatchString(ra.AgentID) {
		c.addf(path+".agent_id", "%s must be digits (at most 20)", shown(ra.AgentID))
	}
	if app.Type != TypeDingTalkISV {
		c.isvNotAllowed(path, ra)
	}
	corpIDMissing := false
	clientSources := []secretSource{
		{"client_secret_file", ra.ClientSecretFile},
		{"client_secret_env", ra.ClientSecretEnv},
		{"client_secret", ra.ClientSecret},
	}
	corpSources := []secretSource{
		{"corp_secret_file", ra.CorpSecretFile},
		{"corp_secret_env", ra.CorpSecretEnv},
		{"corp_secret", ra.CorpSecret},
	}
	switch app.Type {
	case TypeDingTalk:
		switch {
		case ra.ClientID == "":
			c.add(path+".client_id", "is required for type dingtalk")
		case !printableID(ra.ClientID):
			c.addf(path+".client_id", "%s must not contain spaces or control characters", shown(ra.ClientID))
		}
		app.ClientID = ra.ClientID
		app.ClientSecret = c.secret(path, clientSources)
		c.notAllowed(path, ra.Type, corpSources)
	case TypeDingTalkCorp:
		if ra.CorpID == "" {
			c.add(path+".corp_id", "is required for type dingtalk_corp")
			corpIDMissing = true
		}
		if ra.ClientID != "" {
			c.add(path+".client_id", "is not allowed for type dingtalk_corp")
		}
		c.notAllowed(path, ra.Type, clientSources)
		// Organization-authorized apps only exist on the legacy API.
		if ra.TokenAPI != "" && app.TokenAPI != TokenAPILegacy {
			c.addf(path+".token_api", "%s: type dingtalk_corp always uses the legacy API: remove token_api", shown(ra.TokenAPI))
		}
		app.TokenAPI = TokenAPILegacy
		app.CorpSecret = c.secret(path, corpSources)
	case TypeDingTalkISV:
		app.ISV = c.isv(path, ra, clientSources, corpSources)
	case "":
		c.addf(path+".type", "is required: one of %s", appTypes())
	default:
		c.addf(path+".type", "%s is not one of %s", shown(ra.Type), appTypes())
	}
	if ra.JSAPITicket && app.Type != TypeDingTalkISV {
		if ra.CorpID == "" && !corpIDMissing {
			c.add(path+".corp_id", "is required when jsapi_ticket is true")
		}
		if ra.AgentID == "" {
			c.add(path+".agent_id", "is required when jsapi_ticket is true")
		}
	}
	return app
}

// appTypes lists the app types the file accepts, for messages.
func appTypes() string {
	return strings.Join([]string{TypeDingTalk.String(), TypeDingTalkCorp.String(), TypeDingTalkISV.String()}, ", ")
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}

// printableID reports whether an identifier has no spaces and no control characters.
func printableID(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}
