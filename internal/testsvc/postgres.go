package testsvc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Postgres is a private PostgreSQL cluster on loopback: made by initdb in
// a temporary directory, served by a postgres process of our own on a free
// port (TCP only, trust authentication, superuser "postgres"), with
// fsync on: what it acknowledged survives Stop and Crash.
//
// PostgreSQL refuses to run as root; when the tests run as root the
// cluster belongs to the "postgres" system user (made by the Debian
// package), and its directory is under os.TempDir, not t.TempDir, whose
// parents that user cannot enter.
type Postgres struct {
	t    testing.TB
	bin  string // the directory of initdb and postgres
	dir  string // ours: the cluster is dir/data, the log dir/postgres.log
	port int
	cred *syscall.Credential // nil: run as ourselves

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited and been waited for
}

// StartPostgres makes a cluster for t, starts it and stops it (and removes
// its directory) when t ends. The caller gates the test with Integration
// first; a missing PostgreSQL then fails t.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	p := &Postgres{t: t, bin: postgresBin(t), port: FreePort(t)}
	dir, err := os.MkdirTemp("", "edged-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() {
		p.stop(syscall.SIGINT, 10*time.Second)
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("testsvc: remove %s: %v", dir, err)
		}
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("%s=1 and running as root, but there is no postgres user to run PostgreSQL as (apt-get install -y postgresql): %v", Env, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	// -N: a throwaway cluster need not be synced by initdb; the server
	// itself runs with fsync on.
	initdb := exec.Command(filepath.Join(p.bin, "initdb"),
		"-D", p.DataDir(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "-N")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.Start()
	return p
}

// postgresBin finds the newest /usr/lib/postgresql/*/bin holding initdb
// and postgres, or initdb on PATH.
func postgresBin(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { // numeric: 9.6 < 15 < 16
		va, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(a)), 64)
		vb, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(b)), 64)
		return int(vb*100 - va*100)
	})
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d
		}
	}
	return filepath.Dir(LookPath(t, "initdb", "postgresql"))
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// DataDir is the cluster's data directory.
func (p *Postgres) DataDir() string { return filepath.Join(p.dir, "data") }

// LogPath is the server's log file (stdout and stderr of every start).
func (p *Postgres) LogPath() string { return filepath.Join(p.dir, "postgres.log") }

// Port is the server's TCP port on 127.0.0.1.
func (p *Postgres) Port() int { return p.port }

// DSN is a connection URL for database "postgres" as the superuser.
func (p *Postgres) DSN() string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(p.port) + "/postgres?sslmode=disable"
}

// Start starts the server (again) on the same port and data directory and
// waits until it accepts connections. It does nothing when the server is
// running. Like t.Fatal, call it from the test's goroutine.
func (p *Postgres) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil {
		return
	}
	logf, err := os.OpenFile(p.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"),
		"-D", p.DataDir(),
		"-p", strconv.Itoa(p.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "fsync=on",
		"-c", "synchronous_commit=on",
		"-c", "full_page_writes=on",
		"-c", "shared_buffers=64MB",
		"-c", "max_connections=60",
		"-c", "max_wal_size=1GB",
		"-c", "logging_collector=off",
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = logf, logf // a file, not a pipe: the server never blocks on us
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.t.Fatalf("start postgres: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	p.proc, p.done = cmd, done
	if err := p.waitReady(cmd.Process.Pid, done, 30*time.Second); err != nil {
		p.stopLocked(syscall.SIGQUIT, 5*time.Second)
		log, _ := os.ReadFile(p.LogPath())
		p.t.Fatalf("postgres (pid %d): %v\n%s", cmd.Process.Pid, err, log)
	}
}

// waitReady waits until postmaster.pid says our postmaster is ready (what
// pg_ctl -w checks: the port accepts connections before recovery is over)
// and the port accepts connections.
func (p *Postgres) waitReady(pid int, exited <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		select {
		case <-exited:
			return fmt.Errorf("exited during start-up")
		default:
		}
		if postmasterReady(filepath.Join(p.DataDir(), "postmaster.pid"), pid) {
			return WaitPort("127.0.0.1:"+strconv.Itoa(p.port), time.Until(deadline))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// postmasterReady reads postmaster.pid: line 1 is the PID, line 8 the
// status ("ready" once it accepts connections).
func postmasterReady(path string, pid int) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, strings.TrimSpace(sc.Text()))
	}
	return len(lines) >= 8 && lines[0] == strconv.Itoa(pid) && lines[7] == "ready"
}

// Stop shuts the server down (SIGINT: PostgreSQL's fast shutdown, which
// disconnects the clients and checkpoints) and waits for it to exit
// (SIGKILL after 10 s). It does nothing when the server is not running.
func (p *Postgres) Stop() { p.stop(syscall.SIGINT, 10*time.Second) }

// Crash stops the server with SIGQUIT, PostgreSQL's immediate shutdown: no
// checkpoint, so the next Start recovers from the WAL as after a power cut.
func (p *Postgres) Crash() { p.stop(syscall.SIGQUIT, 10*time.Second) }

func (p *Postgres) stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked(sig, grace)
}

// stopLocked signals our own postmaster by its PID, never by name; the
// postmaster stops its backends.
func (p *Postgres) stopLocked(sig syscall.Signal, grace time.Duration) {
	if p.proc == nil {
		return
	}
	proc, done := p.proc.Process, p.done
	p.proc, p.done = nil, nil
	signalAndWait(p.t, "postgres", proc, done, sig, grace)
}
