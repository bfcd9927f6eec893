package config

import (
	"crypto/tls"
	"crypto/x509"
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

// clients validates the clients against the apps' names, the TLS settings (certificate names need a
// client CA) and the default rate limit.
func (c *checker) clients(raw []rawClient, appNames map[string]int, t *TLS, defaultLimit RateLimit) []Client {
	var clients []Client
	clientNames := make(map[string]int)
	keys := make(map[[32]byte]int)
	certNames := make(map[string]int)
	for i, rc := range raw {
		path := fmt.Sprintf("clients[%d]", i)
		cl := Client{Name: rc.Name}
		switch {
		case rc.Name == "":
			c.add(path+".name", "is required")
		case hasControl(rc.Name):
			c.addf(path+".name", "%s must not contain control characters", shown(rc.Name))
		default:
			if j, dup := clientNames[rc.Name]; dup {
				c.addf(path+".name", "duplicate client name %q (also clients[%d])", rc.Name, j)
			} else {
				clientNames[rc.Name] = i
			}
		}
		if rc.KeySHA256 != "" || len(rc.CertNames) == 0 {
			if sum, ok := c.keyHash(path+".key_sha256", rc.KeySHA256); ok {
				cl.KeySHA256 = sum
				if j, dup := keys[sum]; dup {
					c.addf(path+".key_sha256", "same key as clients[%d]", j)
				} else {
					keys[sum] = i
				}
			}
		}
		for j, n := range rc.CertNames {
			p := fmt.Sprintf("%s.cert_names[%d]", path, j)
			switch {
			case n == "":
				c.add(p, "must be a non-empty name without spaces or control characters")
			case !printableID(n):
				c.addf(p, "%s must be a name without spaces or control characters", shown(n))
			case t == nil || t.ClientCAFile == "":
				c.add(p, "needs tls.client_ca_file: only verified client certificates identify clients")
			default:
				if k, dup := certNames[n]; dup {
					c.addf(p, "%s also identifies clients[%d]", shown(n), k)
				} else {
					certNames[n] = i
				}
			}
		}
		cl.CertNames = rc.CertNames
		cl.RateLimit = defaultLimit
		if rc.RateLimit != nil {
			cl.RateLimit = c.rateLimit(path+".rate_limit", *rc.RateLimit)
		}
		// A client that only uses Part 2 features (the proxy, user tokens, Stream tickets, robots,
		// suite tickets) may have no apps: it then never sees a token.
		if len(rc.Apps) > 0 || (!rc.flowsOnly() && len(rc.Proxy) == 0 && len(rc.SuiteTickets) == 0) {
			cl.Apps = c.clientApps(path+".apps", rc.Apps, appNames)
		}
		cl.Proxy = c.clientProxy(path+".proxy", rc.Proxy, appNames)
		clients = append(clients, cl)
	}
	return clients
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

func (c *checker) redis(rr *rawRedis) *Redis {
	const path = "store.redis"
	r := &Redis{
		URL:        rr.URL,
		Addrs:      rr.Addrs,
		MasterName: rr.MasterName,
		KeyPrefix:  or(rr.KeyPrefix, DefaultKeyPrefix),
	}
	urlPassword := false
	switch {
	case rr.URL != "" && len(rr.Addrs) > 0:
		c.add(path, "set either url or addrs, not both")
	case rr.URL == "" && len(rr.Addrs) == 0:
		c.add(path, "one of url or addrs is required")
	case rr.URL != "":
		// The URL may carry a password: no message here quotes it or the parser's error.
		// Parts of it are quoted, never the whole: a password may be anywhere in it.
		u, err := url.Parse(rr.URL)
		switch {
		case err != nil:
			c.add(path+".url", "must be a redis:// or rediss:// URL (it does not parse as a URL)")
		case u.Scheme != "redis" && u.Scheme != "rediss":
			c.addf(path+".url", "must be a redis:// or rediss:// URL, not %s", shown(u.Scheme+"://"))
		case u.Host == "" || u.Hostname() == "":
			c.add(path+".url", "must name a host")
		case u.Port() != "" && !validPort(u.Port()):
			c.addf(path+".url", "port %s is not from 1 to 65535", shown(u.Port()))
		case u.Fragment != "":
			c.add(path+".url", "must not have a fragment")
		case !validDBPath(u.Path):
			c.addf(path+".url", "path %s must be empty or /<database number>", shown(u.Path))
		default:
			if pw, set := u.User.Password(); set && pw != "" {
				urlPassword = true
			}
		}
	default:
		seen := make(map[string]int)
		for i, a := range rr.Addrs {
			p := fmt.Sprintf("%s.addrs[%d]", path, i)
			if _, _, ok := c.hostPort(p, a, false); !ok {
				continue
			}
			if j, dup := seen[a]; dup {
				c.addf(p, "duplicate address %s (also %s.addrs[%d])", shown(a), path, j)
			}
			seen[a] = i
		}
	}
	if rr.MasterName != "" && len(rr.Addrs) == 0 {
		c.add(path+".master_name", "is only allowed with addrs (Redis Sentinel)")
	}
	if rr.PasswordFile != nil {
		pw, ok := c.secretFile(path+".password_file", *rr.PasswordFile)
		if ok {
			r.Password = pw
		}
		if urlPassword {
			c.add(path+".password_file", "the url already carries a password: give it in one place only")
		}
	}
	if !keyPrefixRE.MatchString(r.KeyPrefix) {
		c.addf(path+".key_prefix", "%s must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", shown(r.KeyPrefix))
	}
	return r
}

func validPort(s string) bool {
	p, err := strconv.Atoi(s)
	return err == nil && p > 0 && p <= 65535
}

func validDBPath(p string) bool {
	if p == "" || p == "/" {
		return true
	}
	n, err := strconv.Atoi(strings.TrimPrefix(p, "/"))
	return err == nil && n >= 0 && strings.HasPrefix(p, "/")
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

func (c *checker) clientApps(path string, apps []string, known map[string]int) []string {
	if len(apps) == 0 {
		c.add(path, `must list at least one app, or "*" for all`)
		return nil
	}
	seen := make(map[string]int)
	for i, a := range apps {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case a == "":
			c.add(p, "must not be empty")
			continue
		case a == AllApps:
			if len(apps) > 1 {
				c.add(p, `"*" must be the only entry`)
			}
		default:
			if _, ok := known[a]; !ok && !c.isBad("apps") {
				c.addf(p, "unknown app %s", shown(a))
			}
		}
		if j, dup := seen[a]; dup {
			c.addf(p, "duplicate entry %s (also %s[%d])", shown(a), path, j)
		}
		seen[a] = i
	}
	return apps
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

// tls checks the TLS files: the key pair must load and the CA bundle must hold certificates. Errors
// name the files, never their contents.
func (c *checker) tls(rt *rawTLS) *TLS {
	t := &TLS{CertFile: rt.CertFile, KeyFile: rt.KeyFile, ClientCAFile: rt.ClientCAFile}
	switch {
	case t.CertFile == "":
		c.add("tls.cert_file", "is required with tls")
	case t.KeyFile == "":
		c.add("tls.key_file", "is required with tls")
	default:
		certPEM, err1 := c.readFile(t.CertFile)
		keyPEM, err2 := c.readFile(t.KeyFile)
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err1 != nil || err2 != nil || err != nil {
			c.addf("tls.cert_file", "%q and tls.key_file %q do not load as a PEM certificate and its private key", t.CertFile, t.KeyFile)
		}
	}
	if t.ClientCAFile != "" {
		pem, err := c.readFile(t.ClientCAFile)
		if err != nil || !x509.NewCertPool().AppendCertsFromPEM(pem) {
			c.addf("tls.client_ca_file", "%q must be readable and hold PEM CA certificates", t.ClientCAFile)
		}
	}
	return t
}

// rateLimit checks a rate_limit block; rps 0 (the default) means no limit, and burst defaults to
// twice rps (at least 1).
func (c *checker) rateLimit(path string, rl rawLimit) RateLimit {
	var out RateLimit
	if rl.RPS != nil {
		out.RPS = *rl.RPS
		if !(out.RPS >= 0 && out.RPS <= 1e6) {
			c.addf(path+".rps", "%g must be between 0 (no limit) and 1000000", out.RPS)
		}
	}
	if out.RPS > 0 {
		out.Burst = max(1, int(2*out.RPS))
	}
	if rl.Burst != nil {
		out.Burst = *rl.Burst
		if out.Burst < 1 {
			c.addf(path+".burst", "%d must be at least 1", out.Burst)
		}
	}
	return out
}
