// Checking the clients section: keys, the apps each client may read, the certificate names that
// stand for a key (with the TLS files they need) and rate limits.

package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

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
