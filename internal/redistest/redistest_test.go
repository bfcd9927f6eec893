package redistest

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestServerLifecycle(t *testing.T) {
	s := Start(t)
	if got, err := s.Do("PING"); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	if !strings.HasPrefix(s.URL(), "redis://127.0.0.1:") || !strings.HasSuffix(s.URL(), "/0") {
		t.Fatalf("URL = %q", s.URL())
	}
	if got, _ := s.Do("CONFIG", "GET", "save"); got != "save\n" {
		t.Fatalf("CONFIG GET save = %q, want nothing saved", got)
	}
	if _, err := s.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}

	s.Freeze()
	start := time.Now()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("PING to a frozen server answered")
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("PING to a frozen server failed after %v, want a timeout, not a refusal", d)
	}
	s.Thaw()
	if got, err := s.Do("GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET after thaw = %q, %v", got, err)
	}

	addr := s.Addr()
	s.Kill()
	if _, err := Do(addr, "PING"); err == nil {
		t.Fatal("PING to a killed server answered")
	}
	s.Kill() // twice is fine

	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", s.Addr(), addr)
	}
	if got, err := s.Do("GET", "k"); err != nil || got != "" {
		t.Fatalf("GET after restart = %q, %v; want empty data", got, err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers on %s", a.Addr())
	}
	if _, err := a.Do("SET", "k", "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Do("GET", "k"); got != "" {
		t.Fatalf("b sees a's key: %q", got)
	}
}

// recordingTB stands in for a test so that Start's missing-binary paths can be observed.
type recordingTB struct {
	testing.TB
	mu      sync.Mutex
	skipped bool
	failed  bool
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Skipf(string, ...any) {
	r.mu.Lock()
	r.skipped = true
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(string, ...any) {
	r.mu.Lock()
	r.failed = true
	r.mu.Unlock()
	runtime.Goexit()
}

func TestMissingBinary(t *testing.T) {
	for _, tc := range []struct {
		name, ci     string
		skip, failed bool
	}{
		{"local skips", "", true, false},
		{"CI fails", "true", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tc.ci)
			r := &recordingTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				Start(r)
				t.Error("Start returned without redis-server")
			}()
			<-done
			if r.skipped != tc.skip || r.failed != tc.failed {
				t.Fatalf("skipped %v, failed %v; want %v, %v", r.skipped, r.failed, tc.skip, tc.failed)
			}
		})
	}
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster start-up takes seconds")
	}
	c := StartCluster(t, 3, 1)
	if len(c.Addrs()) != 6 || c.Masters() != 3 {
		t.Fatalf("%d nodes, %d masters; want 6, 3", len(c.Addrs()), c.Masters())
	}
	addr := c.KillMaster(0)
	c.WaitOK()
	if _, err := Do(addr, "PING"); err == nil {
		t.Fatal("killed master still answers")
	}
}

func TestSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("sentinel failover takes seconds")
	}
	s := StartSentinel(t)
	if s.MasterName() == "" || len(s.SentinelAddrs()) == 0 {
		t.Fatal("no master name or sentinel")
	}
	old := s.KillMaster()
	s.WaitFailover(old)
	if now := s.MasterAddr(); now == old {
		t.Fatalf("master still %s after failover", now)
	}
}
