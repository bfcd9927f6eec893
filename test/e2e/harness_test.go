package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokend/tokend/internal/config"
	"github.com/tokend/tokend/internal/fakedingtalk"
	"github.com/tokend/tokend/internal/redistest"
	"github.com/tokend/tokend/internal/token"
)

// pollEvery paces every poll of the suite: often enough to time events to a few tens of
// milliseconds, rarely enough that scraping metrics does not load the replicas measured.
const pollEvery = 25 * time.Millisecond

// startTimeout bounds how long a race-built process may take to announce its address.
const startTimeout = 30 * time.Second

// binaries are the race-enabled builds of the two commands the suite runs.
type binaries struct {
	tokend string
	fake   string
}

// requireProcesses is the preamble of a test that runs real processes: it skips t with -short, and
// skips it (or, with CI set, fails it) when one of tools is not on PATH. what says what the test does
// ("the proxy suite runs real processes"), for the messages.
func requireProcesses(t *testing.T, what string, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip(what + ": skipped with -short")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found on PATH, and CI is set (%s): %v", tool, what, err)
			}
			t.Skipf("%s not found on PATH (%s): %v", tool, what, err)
		}
	}
}

// build compiles cmd/tokend and cmd/fakedingtalk with -race into a temporary directory.
func build(t *testing.T) binaries {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the binaries under test: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// -o DIR/ with several main packages writes one binary per package into DIR.
	cmd := exec.Command(goBin, "build", "-race", "-o", dir+string(filepath.Separator), "./cmd/tokend", "./cmd/fakedingtalk")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -race ./cmd/tokend ./cmd/fakedingtalk: %v\n%s", err, out)
	}
	return binaries{tokend: filepath.Join(dir, "tokend"), fake: filepath.Join(dir, "fakedingtalk")}
}

// lines collects a process's output line by line (and copies it to a file for post-mortems).
type lines struct {
	mu      sync.Mutex
	file    io.Writer
	partial []byte
	all     []string
	changed chan struct{} // closed and replaced at every new line
}

func newLines(file io.Writer) *lines { return &lines{file: file, changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.file.Write(p)
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// snapshot returns the complete lines so far and a channel closed at the next one.
func (l *lines) snapshot() ([]string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...), l.changed
}

// await returns the first line for which match returns true, waiting for it until ctx ends or done
// closes (the process exited).
func (l *lines) await(ctx context.Context, done <-chan struct{}, match func(string) bool) (string, error) {
	seen := 0
	for {
		all, changed := l.snapshot()
		for ; seen < len(all); seen++ {
			if match(all[seen]) {
				return all[seen], nil
			}
		}
		select {
		case <-changed:
		case <-done:
			// The last lines may have arrived with the exit: look once more.
			all, _ := l.snapshot()
			for ; seen < len(all); seen++ {
				if match(all[seen]) {
					return all[seen], nil
				}
			}
			return "", errors.New("process exited")
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// process is one child process, killed when the test ends.
type process struct {
	name  string
	cmd   *exec.Cmd
	out   *lines
	done  chan struct{}    // closed once the process has exited
	state *os.ProcessState // set before done closes
}

func startProcess(t *testing.T, dir, name, bin string, args ...string) *process {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	out := newLines(f)
	cmd := exec.Command(bin, args...)
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT) // a process left stopped by a scenario
		if t.Failed() && !p.exited() {
			// A Go process dumps every goroutine's stack on SIGQUIT: the post-mortem of a hang.
			_ = cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
			}
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
	return p
}

func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit, at most timeout, and returns its state.
func (p *process) wait(t *testing.T, timeout time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.done:
		return p.state
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v", p.name, timeout)
		return nil
	}
}

// eventually polls cond until it holds, failing the test when timeout passes first. It returns when
// cond was first seen true. Real time is what these waits are about: processes, sockets and
// lifetimes measured in seconds.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	return eventuallyWhy(t, timeout, what, func() (bool, string) { return cond(), "" })
}

// eventuallyWhy is eventually with a cond that says why it does not hold yet; the last reason is in
// the failure message.
func eventuallyWhy(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return time.Now()
		}
		if time.Now().After(deadline) {
			if why != "" {
				why = ": " + why
			}
			t.Fatalf("%s: not so within %v%s", what, timeout, why)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("%s: test ended", what)
		}
	}
}

// waitUntil blocks until the wall clock reaches at. The scenarios that use it are about durations
// themselves (a fault that lasts longer than the margin, a ban observed for ten seconds).
func waitUntil(t *testing.T, at time.Time) {
	t.Helper()
	d := time.Until(at)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-t.Context().Done():
		t.Fatal("test ended")
	}
}

// fakeDT drives the fake DingTalk process through its control API.
type fakeDT struct {
	proc *process
	base string
	hc   *http.Client
}

// startFake starts the fake DingTalk with apps registered (through -apps-file: secrets stay off the
// command line) and tokens and tickets living ttl.
func startFake(t *testing.T, bins binaries, dir string, ttl time.Duration, apps []app) *fakeDT {
	t.Helper()
	var b strings.Builder
	for _, a := range apps {
		fmt.Fprintf(&b, "%s:%s\n", a.clientID, a.secret)
	}
	appsFile := filepath.Join(dir, "fake-apps.txt")
	if err := os.WriteFile(appsFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, dir, "fakedingtalk", bins.fake, "-listen", "127.0.0.1:0", "-apps-file", appsFile,
		"-token-ttl", ttl.String(), "-ticket-ttl", ttl.String(), "-log-level", "debug")
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	line, err := p.out.await(ctx, p.done, func(s string) bool { return strings.HasPrefix(s, "listening on ") })
	if err != nil {
		t.Fatalf("fakedingtalk did not announce its address: %v", err)
	}
	f := &fakeDT{proc: p, base: "http://" + strings.TrimSpace(strings.TrimPrefix(line, "listening on ")),
		hc: &http.Client{Timeout: 5 * time.Second}}
	var health map[string]any
	f.do(t, http.MethodGet, "healthz", nil, &health)
	return f
}

// do calls the control API; out, if not nil, receives the JSON answer.
func (f *fakeDT) do(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	// Not t.Context(): the log check asks the fake for its record during cleanup, after it ended.
	req, err := http.NewRequestWithContext(context.Background(), method, f.base+fakedingtalk.ControlPrefix+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.hc.Do(req)
	if err != nil {
		t.Fatalf("fake %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("fake %s %s: %s: %s", method, path, resp.Status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("fake %s %s: decode: %v", method, path, err)
		}
	}
}

// fault injects fl for the app key ("" for every app).
func (f *fakeDT) fault(t *testing.T, key string, fl fakedingtalk.Fault) {
	t.Helper()
	if key == "" {
		key = fakedingtalk.AllKey
	}
	f.do(t, http.MethodPut, "faults/"+key, fl, nil)
}

func (f *fakeDT) clearFaults(t *testing.T) {
	t.Helper()
	f.do(t, http.MethodDelete, "faults", nil, nil)
}

func (f *fakeDT) revoke(t *testing.T, value string) bool {
	t.Helper()
	var r struct {
		Revoked bool `json:"revoked"`
	}
	f.do(t, http.MethodPost, "revoke", map[string]string{"value": value}, &r)
	return r.Revoked
}

// calls returns the token and ticket calls the fake received, by app key.
func (f *fakeDT) calls(t *testing.T) map[string]fakedingtalk.Counts {
	t.Helper()
	var r struct {
		Total int                            `json:"total"`
		Apps  map[string]fakedingtalk.Counts `json:"apps"`
	}
	f.do(t, http.MethodGet, "calls", nil, &r)
	return r.Apps
}

// issued returns every value the fake handed out, with its current expiry.
func (f *fakeDT) issued(t *testing.T) []fakedingtalk.Issued {
	t.Helper()
	var r []fakedingtalk.Issued
	f.do(t, http.MethodGet, "issued", nil, &r)
	return r
}

// current returns the newest value of kind issued for the app key.
func (f *fakeDT) current(t *testing.T, key string, kind token.Kind) fakedingtalk.Issued {
	t.Helper()
	var last fakedingtalk.Issued
	for _, i := range f.issued(t) {
		if i.App == key && i.Kind == kind {
			last = i
		}
	}
	if last.Value == "" {
		t.Fatalf("the fake issued no %s for %s", kind, key)
	}
	return last
}

// spec describes a cluster: the fake's lifetimes, the apps and tokend's settings.
type spec struct {
	replicas   int
	apps       int
	ticketApps int // the first ticketApps apps keep a jsapi ticket too
	tokenTTL   time.Duration
	margin     time.Duration
	timeout    time.Duration
	retry      time.Duration // upstream.failure_retry
	// initial, if not zero, is a global fault in place before tokend starts.
	initial fakedingtalk.Fault
	// clientYAML is appended to the client's entry (indented for it) and extraYAML to the file.
	clientYAML, extraYAML string
}

// app is one configured app, with the credentials the fake knows it by.
type app struct {
	name, clientID, secret string
	ticket                 bool
}

// cluster is a fake DingTalk, a redis-server and N tokend replicas sharing them.
type cluster struct {
	t         *testing.T
	spec      spec
	bins      binaries
	dir       string
	fake      *fakeDT
	redis     *redistest.Server
	apps      []app
	clientKey string
	config    string // the configuration file every replica reads
	replicas  []*replica
	hc        *http.Client
}

// replica is one tokend process.
type replica struct {
	i        int
	proc     *process
	api, ops string // base URLs
	gateway  string // base URL of the gateway listener, "" without one
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// logDir is where a scenario's configuration and process logs go: a temporary directory, or, when
// TOKEND_E2E_LOGS names a directory, a subdirectory of it that outlives the test (for post-mortems
// and CI artifacts; the files hold test secrets only).
func logDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("TOKEND_E2E_LOGS")
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startCluster starts everything s describes and returns once every replica listens (warm-up may
// still be running: see waitReady). Everything is torn down when the test ends, after the replicas'
// logs were checked for leaked secrets, data races and panics.
func startCluster(t *testing.T, bins binaries, s spec) *cluster {
	t.Helper()
	c := &cluster{t: t, spec: s, bins: bins, dir: logDir(t), hc: newHTTPClient()}
	t.Cleanup(c.hc.CloseIdleConnections)
	c.redis = redistest.Start(t)
	for i := range s.apps {
		c.apps = append(c.apps, app{name: fmt.Sprintf("app%d", i), clientID: fmt.Sprintf("dinge2eapp%d", i),
			secret: "e2e-secret-" + randomHex(t, 16), ticket: i < s.ticketApps})
	}
	c.fake = startFake(t, bins, c.dir, s.tokenTTL, c.apps)
	if s.initial != (fakedingtalk.Fault{}) {
		c.fake.fault(t, "", s.initial)
	}
	key, _, err := config.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	c.clientKey = key
	// Registered after the fake started and before the replicas: cleanups run in reverse, so this
	// runs once the replicas are dead (their logs complete) and while the fake still answers.
	t.Cleanup(c.checkLogs)

	c.config = c.writeConfig()
	for range s.replicas {
		c.launch()
	}
	for _, r := range c.replicas {
		c.announced(r)
	}
	return c
}

// launch starts one more replica with the cluster's configuration, without waiting for it.
func (c *cluster) launch() *replica {
	i := len(c.replicas)
	r := &replica{i: i, proc: startProcess(c.t, c.dir, fmt.Sprintf("tokend%d", i), c.bins.tokend, "-config", c.config)}
	c.replicas = append(c.replicas, r)
	return r
}

// addReplica starts one more replica and waits until it is ready.
func (c *cluster) addReplica() *replica {
	c.t.Helper()
	r := c.launch()
	c.announced(r)
	eventually(c.t, startTimeout, fmt.Sprintf("replica %d ready", r.i), func() bool {
		code, _, err := c.readyz(r)
		return err == nil && code == http.StatusOK
	})
	return r
}

// announced waits for r's "tokend serving" line and learns its addresses from it.
func (c *cluster) announced(r *replica) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	var addrs struct {
		Msg       string `json:"msg"`
		Listen    string `json:"listen"`
		OpsListen string `json:"ops_listen"`
		Gateway   string `json:"gateway_listen"`
	}
	_, err := r.proc.out.await(ctx, r.proc.done, func(line string) bool {
		return json.Unmarshal([]byte(line), &addrs) == nil && addrs.Msg == "tokend serving"
	})
	if err != nil {
		t.Fatalf("replica %d did not announce its addresses: %v", r.i, err)
	}
	r.api, r.ops = "http://"+addrs.Listen, "http://"+addrs.OpsListen
	if addrs.Gateway != "" {
		r.gateway = "http://" + addrs.Gateway
	}
}

// writeConfig writes the one configuration file every replica reads.
func (c *cluster) writeConfig() string {
	t, s := c.t, c.spec
	t.Helper()
	sum := config.HashKey(c.clientKey)
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:0\nops_listen: 127.0.0.1:0\nlog:\n  level: info\n  format: json\n")
	fmt.Fprintf(&b, "store:\n  redis:\n    url: %s\n    key_prefix: tokend\n", c.redis.URL())
	fmt.Fprintf(&b, "refresh:\n  margin: %s\n", s.margin)
	fmt.Fprintf(&b, "upstream:\n  timeout: %s\n  failure_retry: %s\n", s.timeout, s.retry)
	fmt.Fprintf(&b, "dingtalk:\n  api_base: %s\n  oapi_base: %s\n", c.fake.base, c.fake.base)
	b.WriteString("apps:\n")
	for _, a := range c.apps {
		fmt.Fprintf(&b, "  - name: %s\n    type: dingtalk\n    client_id: %s\n    client_secret: %s\n    token_api: v1\n", a.name, a.clientID, a.secret)
		if a.ticket {
			fmt.Fprintf(&b, "    jsapi_ticket: true\n    corp_id: dinge2ecorp\n    agent_id: \"1000\"\n")
		}
	}
	fmt.Fprintf(&b, "clients:\n  - name: chaos\n    key_sha256: %s\n    apps: [\"*\"]\n", hex.EncodeToString(sum[:]))
	b.WriteString(s.clientYAML)
	b.WriteString(s.extraYAML)
	path := filepath.Join(c.dir, "tokend.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (c *cluster) appNames() []string {
	var names []string
	for _, a := range c.apps {
		names = append(names, a.name)
	}
	return names
}

// waitReady waits until every replica's /readyz answers 200 with the store ok (a store operation
// that timed out during a loaded start-up leaves a replica refreshing alone for a moment).
func (c *cluster) waitReady() {
	t := c.t
	t.Helper()
	for _, r := range c.replicas {
		eventually(t, startTimeout, fmt.Sprintf("replica %d ready", r.i), func() bool {
			code, body, err := c.readyz(r)
			return err == nil && code == http.StatusOK && body.Store == "ok"
		})
	}
}

// tokenCalls returns the fake's token calls for every app, by app name.
func (c *cluster) tokenCalls() map[string]int {
	all := c.fake.calls(c.t)
	out := map[string]int{}
	for _, a := range c.apps {
		out[a.name] = all[a.clientID].Token
	}
	return out
}

// storeBlips counts the times since since that a replica found Redis unavailable (logged "store
// unavailable"): a single Redis operation slower than tokend's 1 s deadline is enough, on a loaded
// machine, and the replica then refreshes alone until its next ping, costing an extra upstream call
// per credential due meanwhile.
func (c *cluster) storeBlips(since time.Time) int {
	n := 0
	for _, r := range c.replicas {
		all, _ := r.proc.out.snapshot()
		for _, line := range all {
			var l struct {
				Time time.Time `json:"time"`
				Msg  string    `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && strings.HasPrefix(l.Msg, "store unavailable") && !l.Time.Before(since) {
				n++
			}
		}
	}
	return n
}

// checkLogs fails the test if a process's output holds a secret, a client key, a token or ticket
// value, a data race report or a panic. It never prints the secret it found.
func (c *cluster) checkLogs() {
	t := c.t
	secrets := map[string]string{"the client key": c.clientKey}
	for _, a := range c.apps {
		secrets["the secret of "+a.name] = a.secret
	}
	if !c.fake.proc.exited() {
		for _, i := range c.fake.issued(t) {
			secrets[fmt.Sprintf("%s %s of %s", i.Kind, token.Fingerprint(i.Value), i.App)] = i.Value
		}
	}
	procs := []*process{c.fake.proc}
	for _, r := range c.replicas {
		procs = append(procs, r.proc)
	}
	for _, p := range procs {
		all, _ := p.out.snapshot()
		for n, line := range all {
			for what, v := range secrets {
				if v != "" && strings.Contains(line, v) {
					t.Errorf("%s's output line %d contains %s (line not shown)", p.name, n+1, what)
				}
			}
			if strings.Contains(line, "WARNING: DATA RACE") || strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
				t.Errorf("%s reported a data race or crashed:\n%s", p.name, tail(all[n:], 60))
			}
		}
	}
	if t.Failed() {
		for _, p := range procs {
			// Log lines only (the goroutine dumps of SIGQUIT stay in the files).
			all, _ := p.out.snapshot()
			var logged []string
			for _, l := range all {
				if strings.HasPrefix(l, "{") || strings.HasPrefix(l, "time=") {
					logged = append(logged, l)
				}
			}
			t.Logf("last log lines of %s (secrets checked above):\n%s", p.name, redact(tail(logged, 15), secrets))
		}
		if os.Getenv("TOKEND_E2E_LOGS") != "" {
			t.Logf("complete logs, with goroutine dumps of the replicas still running at the failure: %s", c.dir)
		}
	}
}

// tail returns the last n of lines, joined.
func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func redact(s string, secrets map[string]string) string {
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[REDACTED]")
		}
	}
	return s
}

// metricLines returns the sample lines of Prometheus text output.
func metricLines(text string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
