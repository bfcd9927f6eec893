package redistest

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterTimeout bounds forming a cluster and recovering from a failover.
const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of real redis-server processes on loopback, torn down when the test
// ends. Its methods are not safe for concurrent use.
type Cluster struct {
	tb      testing.TB
	nodes   []*Server
	masters []*Server // the masters as the cluster was created, in port order
	dead    []*Server
}

// StartCluster starts masters × (1 + replicasPerMaster) cluster-enabled redis-server processes,
// joins them with redis-cli --cluster create, and waits until every node reports the cluster ok
// and every replica is in sync. masters must be at least 3 (redis-cli's minimum). A node is
// judged failed after one second, so failovers take a few seconds.
func StartCluster(tb testing.TB, masters, replicasPerMaster int) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("redistest: a cluster needs at least 3 masters, got %d", masters)
	}
	bin := serverBinary(tb)
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redistest: redis-cli not found on PATH (it ships with redis-server): %v", err)
	}
	c := &Cluster{tb: tb}
	for range masters * (1 + replicasPerMaster) {
		c.nodes = append(c.nodes, startServer(tb, bin, func() []string {
			return []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", "1000",
				// The default bus port (port+10000) may not exist for a high port: pick one.
				"--cluster-port", strconv.Itoa(freePort(tb)),
				// Let a replica take over however long its link was down, and keep serving the
				// slots that are still covered while a master is being replaced.
				"--cluster-replica-validity-factor", "0",
				"--cluster-require-full-coverage", "no",
			}
		}))
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitOK(c.nodes)
	for _, n := range c.nodes {
		if info, _ := n.Do("INFO", "replication"); infoField(info, "role") == "master" {
			c.masters = append(c.masters, n)
		}
	}
	if len(c.masters) != masters {
		tb.Fatalf("redistest: cluster has %d masters, want %d", len(c.masters), masters)
	}
	slices.SortFunc(c.masters, func(a, b *Server) int { return a.port - b.port })
	return c
}

// Addrs returns the host:port of every node, masters and replicas, killed ones included.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Masters returns how many masters the cluster was created with.
func (c *Cluster) Masters() int { return len(c.masters) }

// KillMaster kills the i-th master the cluster was created with (0 <= i < Masters()), in port order,
// and returns its address. Its replica takes over after about two seconds; WaitOK waits for that.
func (c *Cluster) KillMaster(i int) string {
	c.tb.Helper()
	if i < 0 || i >= len(c.masters) {
		c.tb.Fatalf("redistest: no master %d", i)
	}
	m := c.masters[i]
	m.Kill()
	c.dead = append(c.dead, m)
	return m.Addr()
}

// WaitOK waits until every live node reports the cluster ok with all 16384 slots served by live
// masters, as after a failover.
func (c *Cluster) WaitOK() {
	c.tb.Helper()
	var live []*Server
	for _, n := range c.nodes {
		if !slices.Contains(c.dead, n) {
			live = append(live, n)
		}
	}
	c.waitOK(live)
}

func (c *Cluster) waitOK(nodes []*Server) {
	c.tb.Helper()
	waitFor(c.tb, clusterTimeout, "cluster ok on every node", func() bool {
		for _, n := range nodes {
			info, err := n.Do("CLUSTER", "INFO")
			if err != nil || infoField(info, "cluster_state") != "ok" ||
				infoField(info, "cluster_slots_ok") != "16384" ||
				infoField(info, "cluster_known_nodes") != strconv.Itoa(len(c.nodes)) {
				return false
			}
			// Slots held by a failed master are not ok; with full coverage off the state can still
			// say ok, so check the node list too.
			nodesOut, err := n.Do("CLUSTER", "NODES")
			if err != nil {
				return false
			}
			for _, line := range strings.Split(nodesOut, "\n") {
				f := strings.Fields(line)
				if len(f) > 8 && strings.Contains(f[2], "master") && strings.Contains(f[2], "fail") {
					return false // a failed master still holds slots
				}
				if len(f) > 2 && strings.Contains(f[2], "handshake") {
					return false
				}
			}
			if info, err := n.Do("INFO", "replication"); err != nil ||
				(infoField(info, "role") == "slave" && infoField(info, "master_link_status") != "up") {
				return false
			}
		}
		return true
	})
}
