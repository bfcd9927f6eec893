// Checking the redis section: one node by URL, a Cluster, or a Sentinel-managed master.

package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

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
