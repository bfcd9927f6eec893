package config

import (
	"fmt"
)

// Robot is a DingTalk custom group robot tokend sends through.
type Robot struct {
	// Name matches [a-z0-9][a-z0-9_-]{0,63} and is unique among robots.
	Name string
	// AccessToken is the webhook's access_token. A secret.
	AccessToken string
	// Secret is the "SEC…" signing secret, "" for a robot without signing. A secret.
	Secret string
}

// AllRobots is the entry of Client.Robots that grants every robot.
const AllRobots = "*"

type rawRobot struct {
	Name            string  `yaml:"name"`
	AccessTokenFile *string `yaml:"access_token_file"`
	AccessTokenEnv  *string `yaml:"access_token_env"`
	AccessToken     *string `yaml:"access_token"`
	SecretFile      *string `yaml:"secret_file"`
	SecretEnv       *string `yaml:"secret_env"`
	Secret          *string `yaml:"secret"`
}

// flowsOnly reports whether a client lists Part 2 permissions, so that it may have no apps.
func (rc rawClient) flowsOnly() bool {
	return len(rc.UserTokens) > 0 || len(rc.Streams) > 0 || len(rc.Robots) > 0
}

// Allowed reports whether list (a client's UserTokens, Streams or Robots) grants name.
func Allowed(list []string, name string) bool {
	for _, a := range list {
		if a == AllApps || a == name {
			return true
		}
	}
	return false
}

// flows validates robots: and the clients' user_tokens, streams and robots permissions.
func (c *checker) flows(raw *rawConfig, cfg *Config) {
	robots := make(map[string]int)
	tokens := make(map[string]int)
	for i, rr := range raw.Robots {
		path := fmt.Sprintf("robots[%d]", i)
		r := Robot{Name: rr.Name}
		switch {
		case rr.Name == "":
			c.add(path+".name", "is required")
		case !appNameRE.MatchString(rr.Name):
			c.addf(path+".name", "%s must match [a-z0-9][a-z0-9_-]{0,63}", shown(rr.Name))
		default:
			if j, dup := robots[rr.Name]; dup {
				c.addf(path+".name", "duplicate robot name %s (also robots[%d])", shown(rr.Name), j)
			} else {
				robots[rr.Name] = i
			}
		}
		r.AccessToken = c.secret(path, []secretSource{
			{"access_token_file", rr.AccessTokenFile},
			{"access_token_env", rr.AccessTokenEnv},
			{"access_token", rr.AccessToken},
		})
		if r.AccessToken != "" {
			// DingTalk's 20 messages a minute are per webhook, and tokend counts per robot entry.
			if j, dup := tokens[r.AccessToken]; dup {
				c.addf(path, "same webhook access token as robots[%d]: one entry per webhook", j)
			} else {
				tokens[r.AccessToken] = i
			}
		}
		signing := []secretSource{{"secret_file", rr.SecretFile}, {"secret_env", rr.SecretEnv}, {"secret", rr.Secret}}
		for _, s := range signing {
			if s.val != nil {
				// secret reports "only one of" when several are given.
				r.Secret = c.secret(path, signing)
				break
			}
		}
		cfg.Robots = append(cfg.Robots, r)
	}
	apps := make(map[string]int)
	for i, a := range cfg.Apps {
		if a.Name != "" {
			apps[a.Name] = i
		}
	}
	for i, rc := range raw.Clients {
		if i >= len(cfg.Clients) {
			break
		}
		path := fmt.Sprintf("clients[%d]", i)
		cl := &cfg.Clients[i]
		cl.UserTokens = c.permissions(path+".user_tokens", rc.UserTokens, apps, "app", "apps")
		cl.Streams = c.permissions(path+".streams", rc.Streams, apps, "app", "apps")
		cl.Robots = c.permissions(path+".robots", rc.Robots, robots, "robot", "robots")
	}
}

// permissions checks a list of app or robot names ("*" alone for all) against known, the names
// configured in the section called section.
func (c *checker) permissions(path string, list []string, known map[string]int, what, section string) []string {
	seen := make(map[string]int)
	for i, n := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case n == "":
			c.add(p, "must not be empty")
			continue
		case n == AllApps:
			if len(list) > 1 {
				c.add(p, `"*" must be the only entry`)
			}
		default:
			if _, ok := known[n]; !ok && !c.isBad(section) {
				c.addf(p, "unknown %s %s", what, shown(n))
			}
		}
		if j, dup := seen[n]; dup {
			c.addf(p, "duplicate entry (also %s[%d])", path, j)
		}
		seen[n] = i
	}
	return list
}
