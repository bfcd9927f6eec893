package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sentinelMaster is the name the Sentinel watches the master under.
const sentinelMaster = "mymaster"

// Sentinel is a master, one replica and one Sentinel, all real processes on loopback, torn down when
// the test ends. The Sentinel judges the master down after one second, so a failover takes a few
// seconds. Its methods are not safe for concurrent use.
type Sentinel struct {
	tb       testing.TB
	servers  []*Server // master and replica as started
	sentinel *Server
}

// StartSentinel starts a master, a replica of it and a Sentinel watching them, and waits until the
// replica is in sync and the Sentinel knows it. It uses redis-sentinel when installed, otherwise
// redis-server --sentinel (the same program).
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	bin := serverBinary(tb)
	master := startServer(tb, bin, nil)
	replica := startServer(tb, bin, func() []string {
		return []string{"--replicaof", "127.0.0.1", strconv.Itoa(master.port)}
	})
	waitFor(tb, startTimeout, "replica in sync", func() bool {
		info, err := replica.Do("INFO", "replication")
		return err == nil && infoField(info, "master_link_status") == "up"
	})

	sbin, sentinelArgs := bin, []string{"--sentinel"}
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		sbin, sentinelArgs = p, nil
	}
	sen := &Server{tb: tb, bin: sbin, dir: tb.TempDir()}
	var err error
	for range 5 {
		sen.port = freePort(tb)
		if err = sen.startSentinel(master.port, sentinelArgs); err == nil {
			break
		}
	}
	if err != nil {
		tb.Fatalf("redistest: sentinel: %v", err)
	}
	tb.Cleanup(sen.stop)

	s := &Sentinel{tb: tb, servers: []*Server{master, replica}, sentinel: sen}
	waitFor(tb, startTimeout, "sentinel knows the replica", func() bool {
		out, err := sen.Do("SENTINEL", "REPLICAS", sentinelMaster)
		return err == nil && strings.Contains(out, "\n"+strconv.Itoa(replica.port)+"\n") &&
			!strings.Contains(out, "disconnected") && !strings.Contains(out, "s_down")
	})
	return s
}

// startSentinel writes a configuration watching the master at masterPort and starts the Sentinel.
func (s *Server) startSentinel(masterPort int, extra []string) error {
	conf := filepath.Join(s.dir, "sentinel.conf")
	text := fmt.Sprintf(`port %d
bind 127.0.0.1
daemonize no
dir %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 10000
`, s.port, s.dir, sentinelMaster, masterPort, sentinelMaster, sentinelMaster)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	p, err := startProcess(s.bin, s.dir, append([]string{conf}, extra...))
	if err != nil {
		return err
	}
	if err := waitPing(s.Addr(), p); err != nil {
		p.kill()
		return fmt.Errorf("sentinel on port %d: %w\n%s", s.port, err, p.logTail())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// MasterName returns the name the Sentinel watches the master under.
func (s *Sentinel) MasterName() string { return sentinelMaster }

// SentinelAddrs returns the host:port of the Sentinels.
func (s *Sentinel) SentinelAddrs() []string { return []string{s.sentinel.Addr()} }

// MasterAddr returns the master's host:port as the Sentinel currently names it.
func (s *Sentinel) MasterAddr() string {
	s.tb.Helper()
	out, err := s.sentinel.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster)
	if err != nil {
		s.tb.Fatalf("redistest: ask the sentinel for the master: %v", err)
	}
	host, port, ok := strings.Cut(out, "\n")
	if !ok {
		s.tb.Fatalf("redistest: sentinel named no master: %q", out)
	}
	return net.JoinHostPort(host, port)
}

// KillMaster kills the current master and returns its address. The Sentinel promotes the replica
// after a second or two; WaitFailover waits for that.
func (s *Sentinel) KillMaster() string {
	s.tb.Helper()
	addr := s.MasterAddr()
	for _, srv := range s.servers {
		if srv.Addr() == addr {
			srv.Kill()
			return addr
		}
	}
	s.tb.Fatalf("redistest: master %s is none of ours", addr)
	return ""
}

// WaitFailover waits until the Sentinel names a master other than old and that server answers as a
// writable master.
func (s *Sentinel) WaitFailover(old string) {
	s.tb.Helper()
	waitFor(s.tb, 30*time.Second, "sentinel failover", func() bool {
		out, err := s.sentinel.Do("SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster)
		if err != nil {
			return false
		}
		host, port, _ := strings.Cut(out, "\n")
		addr := net.JoinHostPort(host, port)
		if addr == old {
			return false
		}
		info, err := Do(addr, "INFO", "replication")
		return err == nil && infoField(info, "role") == "master"
	})
}
