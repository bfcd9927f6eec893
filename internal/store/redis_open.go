// Opening a Redis store: one node, a Cluster or a Sentinel-managed master, from RedisOptions.

package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisOptions configures OpenRedis. Exactly one of URL and Addrs is set.
type RedisOptions struct {
	// URL is a redis:// or rediss:// (TLS) URL of a single node, e.g. redis://host:6379/0.
	URL string
	// Addrs lists host:port addresses: one address is a single node, several a Redis Cluster, and
	// with MasterName they are the Sentinels.
	Addrs []string
	// MasterName selects Sentinel mode: the name of the master the Sentinels at Addrs watch.
	MasterName string
	// Password, when not empty, authenticates to the Redis nodes (not to the Sentinels), overriding
	// any password in URL.
	Password string
	// Prefix starts every key and the channel name. Empty means DefaultPrefix. It must not contain
	// '{' or '}', which would break the Cluster hash tags.
	Prefix string
	// OpTimeout bounds every operation, connecting included. Zero means DefaultOpTimeout.
	OpTimeout time.Duration
}

// OpenRedis connects to Redis as opts says: a URL is one node, several Addrs a Cluster, Addrs with a
// MasterName a Sentinel-managed master. It does not wait for Redis to answer (use Ping); it fails only
// on invalid options. The caller must Close the store.
func OpenRedis(opts RedisOptions) (*Redis, error) {
	if opts.OpTimeout < 0 {
		return nil, errors.New("redis options: negative op timeout")
	}
	if opts.OpTimeout == 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, errors.New("redis options: prefix must not contain '{' or '}'")
	}
	u, err := universalOptions(opts)
	if err != nil {
		return nil, err
	}
	var c redis.UniversalClient
	switch {
	case u.MasterName != "":
		c = redis.NewFailoverClient(u.Failover())
	case len(u.Addrs) > 1:
		co := u.Cluster()
		co.ClusterStateReloadInterval = clusterReloadInterval
		c = redis.NewClusterClient(co)
	default:
		c = redis.NewClient(u.Simple())
	}
	return NewRedis(c, opts.Prefix, opts.OpTimeout), nil
}

// universalOptions checks opts (OpTimeout and Prefix already defaulted) and returns the one option
// block every kind of client is made from: the address(es), the credentials, and the timeouts that
// keep a frozen Redis from hanging a caller. A URL's connection settings (user, password, database,
// TLS, pool and retry parameters) are carried over; Password, when set, replaces the URL's.
func universalOptions(opts RedisOptions) (*redis.UniversalOptions, error) {
	u := &redis.UniversalOptions{
		Addrs:                 opts.Addrs,
		MasterName:            opts.MasterName,
		Password:              opts.Password,
		DialTimeout:           opts.OpTimeout,
		ReadTimeout:           opts.OpTimeout,
		WriteTimeout:          opts.OpTimeout,
		PoolTimeout:           opts.OpTimeout,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		// Not applied to Sentinel-managed clients, which go-redis does not support it for.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	switch {
	case opts.URL != "" && len(opts.Addrs) > 0:
		return nil, errors.New("redis options: set url or addrs, not both")
	case opts.URL != "":
		if opts.MasterName != "" {
			return nil, errors.New("redis options: master name needs addrs (the sentinels), not a url")
		}
		o, err := parseURL(opts.URL)
		if err != nil {
			return nil, err
		}
		u.Addrs = []string{o.Addr}
		if u.Password == "" {
			u.Password = o.Password
		}
		u.Username, u.DB, u.TLSConfig, u.Protocol, u.ClientName = o.Username, o.DB, o.TLSConfig, o.Protocol, o.ClientName
		u.MaxRetries, u.MinRetryBackoff, u.MaxRetryBackoff = o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff
		u.PoolFIFO, u.PoolSize, u.MinIdleConns, u.MaxIdleConns, u.MaxActiveConns = o.PoolFIFO, o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns
		u.ConnMaxIdleTime, u.ConnMaxLifetime = o.ConnMaxIdleTime, o.ConnMaxLifetime
	case len(opts.Addrs) > 0:
		for _, a := range opts.Addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("redis options: addr %q: %w", a, err)
			}
		}
	default:
		return nil, errors.New("redis options: url or addrs is required")
	}
	return u, nil
}

// parseURL parses a redis:// or rediss:// URL. Its errors never repeat the URL, which may hold a
// password.
func parseURL(raw string) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis url: scheme %q, want redis or rediss", u.Scheme)
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	return o, nil
}
