package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
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

func (c *checker) config(raw *rawConfig) *Config {
	cfg := &Config{
		Listen:    or(raw.Listen, DefaultListen),
		OpsListen: or(raw.OpsListen, DefaultOpsListen),
		Log: Log{
			Level:  or(raw.Log.Level, DefaultLogLevel),
			Format: or(raw.Log.Format, DefaultLogFormat),
		},
	}
	c.listeners(cfg.Listen, cfg.OpsListen)
	switch cfg.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		c.add("log.level", "must be debug, info, warn or error")
	}
	switch cfg.Log.Format {
	case "json", "text":
	default:
		c.add("log.format", "must be json or text")
	}
	if raw.Store.Redis != nil {
		cfg.Store.Redis = c.redis(raw.Store.Redis)
	}

	cfg.Refresh.Margin = c.duration("refresh.margin", raw.Refresh.Margin, DefaultMargin)
	if m := cfg.Refresh.Margin; m <= 0 || m >= maxMargin {
		c.addf("refresh.margin", "must be more than 0 and less than %s", maxMargin)
	}
	cfg.Upstream.Timeout = c.duration("upstream.timeout", raw.Upstream.Timeout, DefaultTimeout)
	if t := cfg.Upstream.Timeout; t <= 0 || t > maxTimeout {
		c.addf("upstream.timeout", "must be more than 0 and at most %s", maxTimeout)
	}
	cfg.Upstream.FailureRetry = c.duration("upstream.failure_retry", raw.Upstream.FailureRetry, DefaultFailureRetry)
	if cfg.Upstream.FailureRetry < minRetry {
		c.addf("upstream.failure_retry", "must be at least %s", minRetry)
	}
	cfg.Upstream.MaxRPS = DefaultMaxRPS
	if raw.Upstream.MaxRPS != nil {
		cfg.Upstream.MaxRPS = *raw.Upstream.MaxRPS
		// Written so that NaN fails too.
		if !(cfg.Upstream.MaxRPS > 0 && cfg.Upstream.MaxRPS <= maxRPS) {
			c.addf("upstream.max_rps", "must be more than 0 and at most %g", maxRPS)
		}
	}

	cfg.DingTalk.APIBase = c.baseURL("dingtalk.api_base", or(raw.DingTalk.APIBase, DefaultAPIBase))
	cfg.DingTalk.OAPIBase = c.baseURL("dingtalk.oapi_base", or(raw.DingTalk.OAPIBase, DefaultOAPIBase))

	if len(raw.Apps) == 0 {
		c.add("apps", "at least one app is required")
	}
	names := make(map[string]int)
	for i, ra := range raw.Apps {
		app := c.app(fmt.Sprintf("apps[%d]", i), ra)
		if app.Name != "" {
			if j, dup := names[app.Name]; dup {
				c.addf(fmt.Sprintf("apps[%d].name", i), "duplicate app name %q (also apps[%d])", app.Name, j)
			} else {
				names[app.Name] = i
			}
		}
		cfg.Apps = append(cfg.Apps, app)
	}

	if raw.TLS != nil {
		cfg.TLS = c.tls(raw.TLS)
	}
	cfg.RateLimit = c.rateLimit("rate_limit", raw.RateLimit)
	clientNames := make(map[string]int)
	keys := make(map[[32]byte]int)
	certNames := make(map[string]int)
	for i, rc := range raw.Clients {
		path := fmt.Sprintf("clients[%d]", i)
		cl := Client{Name: rc.Name}
		switch {
		case rc.Name == "":
			c.add(path+".name", "is required")
		case hasControl(rc.Name):
			c.add(path+".name", "must not contain control characters")
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
			case n == "" || !printableID(n):
				c.add(p, "must be a non-empty name without spaces or control characters")
			case cfg.TLS == nil || cfg.TLS.ClientCAFile == "":
				c.add(p, "needs tls.client_ca_file: only verified client certificates identify clients")
			default:
				if k, dup := certNames[n]; dup {
					c.addf(p, "name also identifies clients[%d]", k)
				} else {
					certNames[n] = i
				}
			}
		}
		cl.CertNames = rc.CertNames
		cl.RateLimit = cfg.RateLimit
		if rc.RateLimit != nil {
			cl.RateLimit = c.rateLimit(path+".rate_limit", *rc.RateLimit)
		}
		if len(rc.Apps) > 0 || len(rc.Proxy) == 0 {
			cl.Apps = c.clientApps(path+".apps", rc.Apps, names)
		}
		cl.Proxy = c.clientProxy(path+".proxy", rc.Proxy, names)
		cfg.Clients = append(cfg.Clients, cl)
	}
	c.proxy(raw, cfg)
	return cfg
}

func (c *checker) listeners(listen, ops string) {
	lh, lp, lok := c.hostPort("listen", listen, true)
	oh, op, ook := c.hostPort("ops_listen", ops, true)
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	// Port 0 asks the kernel for a free port, so two ":0" listeners never clash.
	if lok && ook && lp == op && lp != 0 && (lh == oh || wildcard(lh) || wildcard(oh)) {
		c.add("ops_listen", "must differ from listen")
	}
}

// hostPort checks a host:port address; port 0 is accepted only when allowZero.
func (c *checker) hostPort(path, addr string, allowZero bool) (host string, port int, ok bool) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		c.add(path, "must be host:port")
		return "", 0, false
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 || (port == 0 && !allowZero) {
		c.add(path, "must be host:port with a numeric port")
		return "", 0, false
	}
	if hasControl(host) || strings.ContainsAny(host, " /") {
		c.add(path, "must be host:port")
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
		c.add(path, "must be a duration such as 30s, 10m or 1h30m")
		return def
	}
	return d
}

// baseURL checks a DingTalk base URL and returns it without a trailing slash.
func (c *checker) baseURL(path, s string) string {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.add(path, "must be an absolute http:// or https:// URL")
		return s
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		c.add(path, "must be scheme://host[:port] only, without user, path, query or fragment")
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
		u, err := url.Parse(rr.URL)
		switch {
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss"):
			c.add(path+".url", "must be a redis:// or rediss:// URL")
		case u.Host == "" || u.Hostname() == "":
			c.add(path+".url", "must name a host")
		case u.Port() != "" && !validPort(u.Port()):
			c.add(path+".url", "has an invalid port")
		case u.Fragment != "":
			c.add(path+".url", "must not have a fragment")
		case !validDBPath(u.Path):
			c.add(path+".url", "path must be empty or /<database number>")
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
				c.addf(p, "duplicate address (also %s.addrs[%d])", path, j)
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
		c.add(path+".key_prefix", "must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
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

// secretSource is one of the three ways to give a secret.
type secretSource struct {
	key string  // e.g. "client_secret_file"
	val *string // nil when not given
}

func (c *checker) app(path string, ra rawApp) App {
	app := App{
		Name:          ra.Name,
		Type:          ra.Type,
		TokenAPI:      or(ra.TokenAPI, DefaultTokenAPI),
		JSAPITicket:   ra.JSAPITicket,
		CorpID:        ra.CorpID,
		AgentID:       ra.AgentID,
		SignatureHash: or(ra.SignatureHash, DefaultSignatureHash),
	}
	switch {
	case ra.Name == "":
		c.add(path+".name", "is required")
	case !appNameRE.MatchString(ra.Name):
		c.add(path+".name", "must match [a-z0-9][a-z0-9_-]{0,63}")
	}
	if app.TokenAPI != TokenAPIV1 && app.TokenAPI != TokenAPILegacy {
		c.add(path+".token_api", "must be v1 or legacy")
	}
	if app.SignatureHash != HashSHA1 && app.SignatureHash != HashSHA256 {
		c.add(path+".signature_hash", "must be sha1 or sha256")
	}
	if ra.CorpID != "" && !printableID(ra.CorpID) {
		c.add(path+".corp_id", "must not contain spaces or control characters")
	}
	if ra.AgentID != "" && !digitsRE.MatchString(ra.AgentID) {
		c.add(path+".agent_id", "must be digits")
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
	switch ra.Type {
	case TypeDingTalk:
		switch {
		case ra.ClientID == "":
			c.add(path+".client_id", "is required for type dingtalk")
		case !printableID(ra.ClientID):
			c.add(path+".client_id", "must not contain spaces or control characters")
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
		if ra.TokenAPI != "" && ra.TokenAPI != TokenAPILegacy {
			c.add(path+".token_api", "type dingtalk_corp always uses the legacy API: remove token_api")
		}
		app.TokenAPI = TokenAPILegacy
		app.CorpSecret = c.secret(path, corpSources)
	case "":
		c.add(path+".type", "is required: dingtalk or dingtalk_corp")
	default:
		c.add(path+".type", "must be dingtalk or dingtalk_corp")
	}
	if ra.JSAPITicket {
		if ra.CorpID == "" && !corpIDMissing {
			c.add(path+".corp_id", "is required when jsapi_ticket is true")
		}
		if ra.AgentID == "" {
			c.add(path+".agent_id", "is required when jsapi_ticket is true")
		}
	}
	return app
}

func (c *checker) notAllowed(path, typ string, sources []secretSource) {
	for _, s := range sources {
		if s.val != nil {
			c.addf(path+"."+s.key, "is not allowed for type %s", typ)
		}
	}
}

// secret resolves the one secret source given among sources; it returns "" after adding a problem.
func (c *checker) secret(path string, sources []secretSource) string {
	var given []secretSource
	keys := make([]string, len(sources))
	for i, s := range sources {
		keys[i] = s.key
		if s.val != nil {
			given = append(given, s)
		}
	}
	list := strings.Join(keys[:len(keys)-1], ", ") + " or " + keys[len(keys)-1]
	switch len(given) {
	case 0:
		c.addf(path, "one of %s is required", list)
		return ""
	case 1:
	default:
		names := make([]string, len(given))
		for i, g := range given {
			names[i] = g.key
		}
		c.addf(path, "only one of %s may be set, found %s", list, strings.Join(names, " and "))
		return ""
	}
	s := given[0]
	p := path + "." + s.key
	switch {
	case strings.HasSuffix(s.key, "_file"):
		v, _ := c.secretFile(p, *s.val)
		return v
	case strings.HasSuffix(s.key, "_env"):
		name := *s.val
		if !envNameRE.MatchString(name) {
			c.add(p, "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
			return ""
		}
		v := c.getenv(name)
		switch {
		case v == "":
			c.addf(p, "environment variable %s is not set or empty", name)
			return ""
		case hasControl(v):
			c.addf(p, "environment variable %s contains control characters", name)
			return ""
		}
		return v
	default:
		v := *s.val
		switch {
		case v == "":
			c.add(p, "must not be empty")
			return ""
		case hasControl(v):
			c.add(p, "must not contain control characters")
			return ""
		}
		return v
	}
}

// secretFile reads a one-line secret from the file at name. Trailing whitespace (the newline editors
// and `echo` add) is removed. Messages name the file, never its content.
func (c *checker) secretFile(path, name string) (string, bool) {
	if name == "" {
		c.add(path, "must not be empty")
		return "", false
	}
	data, err := c.readFile(name)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			c.addf(path, "file %q does not exist", name)
		case errors.Is(err, fs.ErrPermission):
			c.addf(path, "file %q is not readable: permission denied", name)
		default:
			// A read error names the operation and the path, never the content.
			c.addf(path, "file %q cannot be read: %v", name, err)
		}
		return "", false
	}
	v := strings.TrimRightFunc(string(data), unicode.IsSpace)
	switch {
	case v == "":
		c.addf(path, "file %q is empty", name)
		return "", false
	case hasControl(v):
		c.addf(path, "file %q must hold the secret on a single line", name)
		return "", false
	}
	return v, true
}

func (c *checker) keyHash(path, s string) ([32]byte, bool) {
	var sum [32]byte
	if s == "" {
		c.add(path, "is required (run tokend keygen)")
		return sum, false
	}
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(sum) {
		c.add(path, "must be 64 hexadecimal digits, the SHA-256 of the client key (run tokend keygen)")
		return sum, false
	}
	copy(sum[:], b)
	if sum == HashKey("") {
		c.add(path, "is the SHA-256 of an empty key")
		return sum, false
	}
	if sum == [32]byte{} {
		c.add(path, "must not be all zeros")
		return sum, false
	}
	return sum, true
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
				c.addf(p, "unknown app %q", a)
			}
		}
		if j, dup := seen[a]; dup {
			c.addf(p, "duplicate entry (also %s[%d])", path, j)
		}
		seen[a] = i
	}
	return apps
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
			c.add(path+".rps", "must be between 0 (no limit) and 1000000")
		}
	}
	if out.RPS > 0 {
		out.Burst = max(1, int(2*out.RPS))
	}
	if rl.Burst != nil {
		out.Burst = *rl.Burst
		if out.Burst < 1 {
			c.add(path+".burst", "must be at least 1")
		}
	}
	return out
}
