package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// benchKey is the client key the load generator presents; only its hash goes into the config.
const benchKey = "tkd_bench-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"

// appCred is one app as both the fake and tokend know it.
type appCred struct{ name, key, secret string }

// makeApps returns n apps; a single app is called crm, as in the README.
func makeApps(n int) []appCred {
	if n == 1 {
		return []appCred{{"crm", "dingcrm", "secret-crm"}}
	}
	out := make([]appCred, n)
	for i := range out {
		id := fmt.Sprintf("%05d", i)
		out[i] = appCred{"app" + id, "dingapp" + id, "secret-" + id}
	}
	return out
}

// writeAppsFile writes the fake's key:secret lines.
func (l *lab) writeAppsFile(name string, apps []appCred) (string, error) {
	var b strings.Builder
	for _, a := range apps {
		b.WriteString(a.key + ":" + a.secret + "\n")
	}
	path := filepath.Join(l.dir, name)
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// tokendSetup is what a tokend config of the benchmark varies.
type tokendSetup struct {
	Redis  string // host:port
	Fake   string // host:port
	Apps   []appCred
	Margin time.Duration
	MaxRPS float64
	// Bin is the tokend binary; "" means tokend in the lab's bin directory.
	Bin string
	// LogLevel is log.level; "" means warn.
	LogLevel string
	// Clients is how many clients are configured (at least 1); the benchmark's key is the last.
	Clients int
	// Pprof serves net/http/pprof on the ops listener (debug.pprof).
	Pprof bool
}

func (s tokendSetup) config(listen, ops string) string {
	sum := sha256.Sum256([]byte(benchKey))
	var b strings.Builder
	level := s.LogLevel
	if level == "" {
		level = "warn"
	}
	fmt.Fprintf(&b, "listen: %s\nops_listen: %s\nlog: {level: %s, format: json}\n", listen, ops, level)
	if s.Pprof {
		b.WriteString("debug: {pprof: true}\n")
	}
	fmt.Fprintf(&b, "store:\n  redis: {url: \"redis://%s/0\", key_prefix: tokendbench}\n", s.Redis)
	fmt.Fprintf(&b, "refresh: {margin: %s}\n", s.Margin)
	fmt.Fprintf(&b, "upstream: {max_rps: %s}\n", strconv.FormatFloat(s.MaxRPS, 'f', -1, 64))
	fmt.Fprintf(&b, "dingtalk: {api_base: \"http://%s\", oapi_base: \"http://%s\"}\n", s.Fake, s.Fake)
	b.WriteString("apps:\n")
	for _, a := range s.Apps {
		fmt.Fprintf(&b, "  - {name: %s, type: dingtalk, client_id: %s, client_secret: %s}\n", a.name, a.key, a.secret)
	}
	b.WriteString("clients:\n")
	for i := 1; i < s.Clients; i++ {
		other := sha256.Sum256([]byte(fmt.Sprintf("%s-other-%d", benchKey, i)))
		fmt.Fprintf(&b, "  - {name: other%03d, key_sha256: %s, apps: [\"*\"]}\n", i, hex.EncodeToString(other[:]))
	}
	fmt.Fprintf(&b, "  - {name: bench, key_sha256: %s, apps: [\"*\"]}\n", hex.EncodeToString(sum[:]))
	return b.String()
}

// tokendProc is a running tokend.
type tokendProc struct {
	*proc
	api, ops string // host:port
	started  time.Time
}

// startTokend writes a config for setup on free ports and starts tokend; it returns once /healthz
// answers (not once ready: callers time the warm-up themselves).
func (l *lab) startTokend(ctx context.Context, name string, setup tokendSetup) (*tokendProc, error) {
	var lastErr error
	for range 3 { // a free port can be taken between the probe and the bind
		p1, err1 := freePort()
		p2, err2 := freePort()
		if err1 != nil || err2 != nil || p1 == p2 {
			lastErr = fmt.Errorf("no free ports")
			continue
		}
		api := net.JoinHostPort("127.0.0.1", strconv.Itoa(p1))
		ops := net.JoinHostPort("127.0.0.1", strconv.Itoa(p2))
		cfg := filepath.Join(l.dir, name+".yaml")
		if err := os.WriteFile(cfg, []byte(setup.config(api, ops)), 0o600); err != nil {
			return nil, err
		}
		started := time.Now()
		bin := setup.Bin
		if bin == "" {
			bin = filepath.Join(l.bin, "tokend")
		}
		p, err := l.start(ctx, name, bin, []string{"-config", cfg}, nil)
		if err != nil {
			return nil, err
		}
		t := &tokendProc{proc: p, api: api, ops: ops, started: started}
		err = poll(ctx, 60*time.Second, func() bool {
			return p.alive() != nil || l.status(ctx, "http://"+ops+"/healthz") == 200
		})
		if err == nil && p.alive() == nil {
			return t, nil
		}
		lastErr = fmt.Errorf("%s did not serve: %v; see %s", name, p.alive(), p.log)
		p.stop()
	}
	return nil, lastErr
}

// waitReady polls /readyz until 200 and returns how long after the process start it came.
func (l *lab) waitReady(ctx context.Context, t *tokendProc, limit time.Duration) (time.Duration, error) {
	url := "http://" + t.ops + "/readyz"
	err := poll(ctx, limit, func() bool { return t.alive() != nil || l.status(ctx, url) == 200 })
	if err := t.alive(); err != nil {
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("%s not ready within %s", t.name, limit)
	}
	return time.Since(t.started), nil
}

// fakeCalls is the fake's GET /_fake/calls.
type fakeCalls struct {
	Total int `json:"total"`
	Apps  map[string]struct {
		Token  int `json:"token"`
		Ticket int `json:"ticket"`
	} `json:"apps"`
}

func (l *lab) calls(ctx context.Context, fake string) (fakeCalls, error) {
	var c fakeCalls
	code, body, err := l.get(ctx, "http://"+fake+"/_fake/calls", "")
	if err != nil {
		return c, err
	}
	if code != 200 {
		return c, fmt.Errorf("fake calls: status %d", code)
	}
	return c, json.Unmarshal(body, &c)
}

// spread returns the fewest and the most token calls any of apps received.
func (c fakeCalls) spread(apps []appCred) (lo, hi int) {
	lo = -1
	for _, a := range apps {
		n := c.Apps[a.key].Token
		if lo < 0 || n < lo {
			lo = n
		}
		hi = max(hi, n)
	}
	return lo, hi
}

// issued is one entry of the fake's GET /_fake/issued.
type issued struct {
	App      string    `json:"app"`
	IssuedAt time.Time `json:"issued_at"`
}

func (l *lab) issued(ctx context.Context, fake string) ([]issued, error) {
	var out []issued
	code, body, err := l.get(ctx, "http://"+fake+"/_fake/issued", "")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("fake issued: status %d", code)
	}
	return out, json.Unmarshal(body, &out)
}
