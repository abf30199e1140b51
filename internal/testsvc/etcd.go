package testsvc

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EtcdCluster is a private etcd cluster on loopback: n members started as
// plain processes (Debian's /usr/bin/etcd), their data and logs in the
// test's temp dir. The members run with a 50 ms heartbeat and a 500 ms
// election timeout (loopback is fast), so etcd's minimum lease TTL is 1 s
// and a lost raft leader is replaced in about a second.
type EtcdCluster struct {
	t       testing.TB
	bin     string
	members []*etcdMember
}

type etcdMember struct {
	name       string
	dir        string
	clientPort int
	peerPort   int

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited and been waited for
}

// StartEtcdCluster starts an n-member etcd cluster for t, waits until
// every member is healthy, and stops every member when t ends. The caller
// gates the test with Integration first; a missing etcd then fails t.
// Cleanup kills the members (SIGKILL).
func StartEtcdCluster(t testing.TB, n int) *EtcdCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartEtcdCluster: %d members", n)
	}
	c := &EtcdCluster{t: t, bin: LookPath(t, "etcd", "etcd-server")}
	dir := t.TempDir()
	for i := range n {
		c.members = append(c.members, &etcdMember{
			name:       "m" + strconv.Itoa(i),
			dir:        filepath.Join(dir, "m"+strconv.Itoa(i)),
			clientPort: FreePort(t),
			peerPort:   FreePort(t),
		})
	}
	// SIGKILL: the data is thrown away, and members stopping together
	// with SIGTERM wait for each other (a leader transfers leadership).
	t.Cleanup(func() {
		for _, m := range c.members {
			c.stop(m, syscall.SIGKILL, 0)
		}
	})
	// the members wait for each other: start them all, then wait
	for i := range c.members {
		c.launch(i)
	}
	c.WaitHealthy(20 * time.Second)
	return c
}

// N is the number of members.
func (c *EtcdCluster) N() int { return len(c.members) }

// Endpoints are the client URLs of every member.
func (c *EtcdCluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i := range c.members {
		eps[i] = c.Endpoint(i)
	}
	return eps
}

// Endpoint is member i's client URL.
func (c *EtcdCluster) Endpoint(i int) string {
	return "http://" + c.ClientAddr(i)
}

// ClientAddr is member i's client host:port.
func (c *EtcdCluster) ClientAddr(i int) string {
	return "127.0.0.1:" + strconv.Itoa(c.members[i].clientPort)
}

// LogPath is member i's log file (stdout and stderr of every start).
func (c *EtcdCluster) LogPath(i int) string { return c.members[i].dir + ".log" }

// Stop stops member i with SIGTERM and waits for it to exit (SIGKILL after
// 3 s). It does nothing when the member is not running.
func (c *EtcdCluster) Stop(i int) { c.stop(c.members[i], syscall.SIGTERM, 3*time.Second) }

// Kill kills member i with SIGKILL and waits for it to exit.
func (c *EtcdCluster) Kill(i int) { c.stop(c.members[i], syscall.SIGKILL, 0) }

// Restart starts member i again (on its data dir and ports) and waits until
// its client port accepts connections; it does nothing when the member is
// running. Use WaitHealthy to wait for the cluster to serve again. Like
// t.Fatal, call it from the test's goroutine.
func (c *EtcdCluster) Restart(i int) {
	c.t.Helper()
	c.launch(i)
	if err := WaitPort(c.ClientAddr(i), 10*time.Second); err != nil {
		c.Kill(i)
		log, _ := os.ReadFile(c.LogPath(i))
		c.t.Fatalf("etcd member %d: %v\n%s", i, err, etcdTail(log, 4000))
	}
}

// Running says whether member i is running.
func (c *EtcdCluster) Running(i int) bool {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil
}

// WaitHealthy waits until every running member reports healthy (it has a
// raft leader and serves reads), failing t after within.
func (c *EtcdCluster) WaitHealthy(within time.Duration) {
	c.t.Helper()
	if err := c.waitHealthy(within); err != nil {
		var logs strings.Builder
		for i := range c.members {
			b, _ := os.ReadFile(c.LogPath(i))
			fmt.Fprintf(&logs, "--- member %d log (tail):\n%s\n", i, etcdTail(b, 3000))
		}
		c.t.Fatalf("etcd cluster: %v\n%s", err, logs.String())
	}
}

func (c *EtcdCluster) waitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	for {
		var bad error
		for i := range c.members {
			if !c.Running(i) {
				continue
			}
			if err := etcdHealth(hc, c.Endpoint(i)); err != nil {
				bad = fmt.Errorf("member %d: %w", i, err)
				break
			}
		}
		if bad == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after %s: %w", within, bad)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func etcdHealth(hc *http.Client, endpoint string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"health":"true"`) {
		return fmt.Errorf("GET /health: %s %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

// launch starts member i's process unless it is running.
func (c *EtcdCluster) launch(i int) {
	c.t.Helper()
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		return
	}
	var initial []string
	for _, o := range c.members {
		initial = append(initial, fmt.Sprintf("%s=http://127.0.0.1:%d", o.name, o.peerPort))
	}
	logf, err := os.OpenFile(c.LogPath(i), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	client := "http://" + c.ClientAddr(i)
	peer := fmt.Sprintf("http://127.0.0.1:%d", m.peerPort)
	cmd := exec.Command(c.bin,
		"--name", m.name,
		"--data-dir", m.dir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", strings.Join(initial, ","),
		"--initial-cluster-state", "new", // ignored on a restart (the data dir exists)
		"--initial-cluster-token", "edged-test",
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--logger", "zap",
		"--log-outputs", "stderr",
	)
	cmd.Stdout, cmd.Stderr = logf, logf // a file, not a pipe: the member never blocks on us
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start etcd: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	m.proc, m.done = cmd, done
}

// stop signals our own process by its PID, never by name.
func (c *EtcdCluster) stop(m *etcdMember, sig syscall.Signal, grace time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return
	}
	p, done := m.proc.Process, m.done
	m.proc, m.done = nil, nil
	signalAndWait(c.t, "etcd", p, done, sig, grace)
}

func etcdTail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
