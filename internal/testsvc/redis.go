package testsvc

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Redis is a private redis-server on loopback: no persistence (a restart
// starts empty), its data and log in the test's temp dir.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited and been waited for
}

// StartRedis starts a redis-server for t and stops it when t ends. The
// caller gates the test with Integration first; a missing redis-server then
// fails t.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{
		t:    t,
		bin:  LookPath(t, "redis-server", "redis-server"),
		dir:  t.TempDir(),
		port: FreePort(t),
	}
	t.Cleanup(func() { r.stop(syscall.SIGTERM, 3*time.Second) })
	r.Start()
	return r
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// LogPath is the server's log file (stdout and stderr of every start).
func (r *Redis) LogPath() string { return filepath.Join(r.dir, "redis.log") }

// Start starts the server (again) on the same port and waits until it
// accepts connections. It does nothing when the server is running. Like
// t.Fatal, call it from the test's goroutine.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		return
	}
	logf, err := os.OpenFile(r.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(r.bin,
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(r.port),
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--daemonize", "no",
	)
	cmd.Stdout, cmd.Stderr = logf, logf // a file, not a pipe: the server never blocks on us
	if err := cmd.Start(); err != nil {
		logf.Close()
		r.t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	r.proc, r.done = cmd, done
	if err := WaitPort(r.Addr(), 10*time.Second); err != nil {
		r.stopLocked(syscall.SIGKILL, 0)
		log, _ := os.ReadFile(r.LogPath())
		r.t.Fatalf("redis-server (pid %d): %v\n%s", cmd.Process.Pid, err, log)
	}
}

// Stop stops the server with SIGTERM and waits for it to exit (SIGKILL
// after 3 s). It does nothing when the server is not running.
func (r *Redis) Stop() { r.stop(syscall.SIGTERM, 3*time.Second) }

// Kill kills the server with SIGKILL and waits for it to exit.
func (r *Redis) Kill() { r.stop(syscall.SIGKILL, 0) }

func (r *Redis) stop(sig syscall.Signal, grace time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopLocked(sig, grace)
}

// stopLocked signals our own process by its PID, never by name.
func (r *Redis) stopLocked(sig syscall.Signal, grace time.Duration) {
	if r.proc == nil {
		return
	}
	p, done := r.proc.Process, r.done
	r.proc, r.done = nil, nil
	signalAndWait(r.t, "redis-server", p, done, sig, grace)
}
