package config

import (
	"fmt"
	"net"
	"strconv"

	"github.com/tokend/tokend/internal/callback"
	"github.com/tokend/tokend/internal/dingtalk"
)

// TypeDingTalkISV is a third-party (ISV) enterprise app, or a custom app: suite key and secret, a
// suite ticket, a token per authorized corp.
const TypeDingTalkISV = dingtalk.ISV

// SuiteTicketPush is the suite_ticket value (and default) for tickets DingTalk pushes.
const SuiteTicketPush = "push"

// ISV is the part of an App that only a TypeDingTalkISV app has.
type ISV struct {
	// SuiteKey is the suiteKey (the CustomKey of a custom app).
	SuiteKey string
	// SuiteSecret is the resolved suite secret (the CustomSecret). A secret.
	SuiteSecret string
	// FixedTicket is the suite_ticket the file gives, for a custom app (which accepts any value); ""
	// when tickets are pushed (suite_ticket: push, the default). A secret.
	FixedTicket string
	// Callback is DingTalk's encrypted HTTP push for the app; nil when the file has no callback.
	Callback *Callback
	// Corps are the corps kept warm from start, in file order, without duplicates.
	Corps []string
}

// Callback holds what DingTalk's callback crypto needs. Both are secrets.
type Callback struct {
	// Token is the callback token.
	Token string
	// AESKey is the 43-character EncodingAESKey (checked by callback.DecodeKey).
	AESKey string
}

// Suite returns what DingTalk needs to issue a TypeDingTalkISV app's tokens; the zero Suite for other
// apps. It holds a secret.
func (a App) Suite() dingtalk.Suite {
	if a.ISV == nil {
		return dingtalk.Suite{}
	}
	return dingtalk.Suite{Key: a.ISV.SuiteKey, Secret: a.ISV.SuiteSecret}
}

// PushedTickets reports whether the app is a third-party app whose suite tickets DingTalk pushes.
func (a App) PushedTickets() bool { return a.ISV != nil && a.ISV.FixedTicket == "" }

type rawCallback struct {
	TokenFile  *string `yaml:"token_file"`
	TokenEnv   *string `yaml:"token_env"`
	Token      *string `yaml:"token"`
	AESKeyFile *string `yaml:"aes_key_file"`
	AESKeyEnv  *string `yaml:"aes_key_env"`
	AESKey     *string `yaml:"aes_key"`
}

// isvNotAllowed reports the third-party keys an app of another type sets.
func (c *checker) isvNotAllowed(path string, ra rawApp) {
	set := map[string]bool{
		"suite_key":         ra.SuiteKey != "",
		"suite_secret_file": ra.SuiteSecretFile != nil,
		"suite_secret_env":  ra.SuiteSecretEnv != nil,
		"suite_secret":      ra.SuiteSecret != nil,
		"suite_ticket":      ra.SuiteTicket != nil,
		"callback":          ra.Callback != nil,
		"corps":             ra.Corps != nil,
	}
	for _, k := range []string{"suite_key", "suite_secret_file", "suite_secret_env", "suite_secret", "suite_ticket", "callback", "corps"} {
		if set[k] && ra.Type != "" {
			c.addf(path+"."+k, "is only allowed for type %s", TypeDingTalkISV)
		}
	}
}

// isv checks a dingtalk_isv app's own keys and refuses those of the other types.
func (c *checker) isv(path string, ra rawApp, clientSources, corpSources []secretSource) *ISV {
	typ := TypeDingTalkISV.String()
	for _, k := range []struct {
		key   string
		given bool
	}{{"client_id", ra.ClientID != ""}, {"token_api", ra.TokenAPI != ""}, {"corp_id", ra.CorpID != ""}, {"agent_id", ra.AgentID != ""}} {
		if k.given {
			c.addf(path+"."+k.key, "is not allowed for type %s (corps and agents are named per request)", typ)
		}
	}
	c.notAllowed(path, typ, clientSources)
	c.notAllowed(path, typ, corpSources)

	isv := &ISV{}
	switch {
	case ra.SuiteKey == "":
		c.add(path+".suite_key", "is required for type "+typ)
	case !printableID(ra.SuiteKey):
		c.addf(path+".suite_key", "%s must not contain spaces or control characters", shown(ra.SuiteKey))
	default:
		isv.SuiteKey = ra.SuiteKey
	}
	isv.SuiteSecret = c.secret(path, []secretSource{
		{"suite_secret_file", ra.SuiteSecretFile},
		{"suite_secret_env", ra.SuiteSecretEnv},
		{"suite_secret", ra.SuiteSecret},
	})
	if t := ra.SuiteTicket; t != nil && *t != SuiteTicketPush {
		// A fixed ticket is a secret (a custom app accepts any): its value is never quoted.
		switch {
		case *t == "":
			c.add(path+".suite_ticket", `must be "push" or the fixed ticket of a custom app, not empty`)
		case hasControl(*t):
			c.add(path+".suite_ticket", "must not contain control characters")
		default:
			isv.FixedTicket = *t
		}
	}
	if ra.Callback != nil {
		isv.Callback = c.callback(path+".callback", *ra.Callback)
	}
	seen := make(map[string]int)
	for i, corp := range ra.Corps {
		p := fmt.Sprintf("%s.corps[%d]", path, i)
		if !dingtalk.ValidCorpID(corp) {
			c.addf(p, "%s is not a corp id (1 to 128 letters, digits, '_', '.' and '-')", shown(corp))
			continue
		}
		if j, dup := seen[corp]; dup {
			c.addf(p, "duplicate corp %s (also %s.corps[%d])", shown(corp), path, j)
			continue
		}
		seen[corp] = i
		isv.Corps = append(isv.Corps, corp)
	}
	return isv
}

// callback resolves and checks the callback token and EncodingAESKey.
func (c *checker) callback(path string, rc rawCallback) *Callback {
	cb := &Callback{
		Token: c.secret(path, []secretSource{{"token_file", rc.TokenFile}, {"token_env", rc.TokenEnv}, {"token", rc.Token}}),
	}
	keySources := []secretSource{{"aes_key_file", rc.AESKeyFile}, {"aes_key_env", rc.AESKeyEnv}, {"aes_key", rc.AESKey}}
	key := c.secret(path, keySources)
	if key != "" {
		if _, err := callback.DecodeKey(key); err != nil {
			given := path
			for _, s := range keySources {
				if s.val != nil {
					given = path + "." + s.key
				}
			}
			// DecodeKey's errors give the length, never the key.
			c.addf(given, "%v (the EncodingAESKey of the callback settings)", err)
		} else {
			cb.AESKey = key
		}
	}
	if cb.Token == "" || cb.AESKey == "" {
		return nil
	}
	return cb
}

// isvTop checks callback_listen and the clients' suite_tickets permissions.
func (c *checker) isvTop(raw *rawConfig, cfg *Config) {
	cfg.CallbackListen = raw.CallbackListen
	if raw.CallbackListen != "" {
		if h, p, ok := c.hostPort("callback_listen", raw.CallbackListen, true); ok && p != 0 {
			wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
			for _, other := range []struct{ key, addr string }{{"listen", cfg.Listen}, {"ops_listen", cfg.OpsListen}, {"gateway_listen", cfg.GatewayListen}} {
				oh, op, err := splitHostPortNum(other.addr)
				if err == nil && op == p && (oh == h || wildcard(oh) || wildcard(h)) {
					c.addf("callback_listen", "%s must differ from %s (%s)", shown(raw.CallbackListen), other.key, shown(other.addr))
				}
			}
		}
	}
	isvApps := make(map[string]App)
	known := make(map[string]bool)
	for i, a := range cfg.Apps {
		known[a.Name] = true
		if a.ISV == nil {
			continue
		}
		isvApps[a.Name] = a
		if a.ISV.Callback != nil && raw.CallbackListen == "" {
			c.addf(fmt.Sprintf("apps[%d].callback", i), "needs callback_listen: DingTalk pushes to POST /callbacks/%s there", a.Name)
		}
	}
	for i, rc := range raw.Clients {
		if i >= len(cfg.Clients) || len(rc.SuiteTickets) == 0 {
			continue
		}
		path := fmt.Sprintf("clients[%d].suite_tickets", i)
		seen := make(map[string]int)
		for j, n := range rc.SuiteTickets {
			p := fmt.Sprintf("%s[%d]", path, j)
			switch a, ok := isvApps[n]; {
			case n == "":
				c.add(p, "must not be empty")
			case n == AllApps:
				if len(rc.SuiteTickets) > 1 {
					c.add(p, `"*" must be the only entry`)
				}
			case !ok && known[n]:
				c.addf(p, "app %s is not of type %s: it takes no suite tickets", shown(n), TypeDingTalkISV)
			case !ok:
				if !c.isBad("apps") {
					c.addf(p, "unknown app %s", shown(n))
				}
			case !a.PushedTickets():
				c.addf(p, "app %s has a fixed suite_ticket: it takes no tickets", shown(n))
			}
			if k, dup := seen[n]; dup && n != "" {
				c.addf(p, "duplicate entry %s (also %s[%d])", shown(n), path, k)
			}
			seen[n] = j
		}
		cfg.Clients[i].SuiteTickets = rc.SuiteTickets
	}
}

// splitHostPortNum splits an address already checked by hostPort.
func splitHostPortNum(addr string) (string, int, error) {
	h, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	return h, p, err
}
