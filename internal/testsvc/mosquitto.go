package testsvc

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoTLS is the broker's mutual TLS: a CA that client certificates
// must chain to, and the server's certificate and key.
type MosquittoTLS struct {
	CAFile, CertFile, KeyFile string
	// SecretRegistry, when set, adds a second listener (server TLS only,
	// SecretAddr) for EnOS secret logins, checked against this ingestd
	// registry file by the project's plugin (cmd/mosquitto-enos-auth,
	// built for the test).
	SecretRegistry string
}

// Mosquitto is a private mosquitto on loopback with mutual TLS, the
// project's ACL (examples/scaleout/mosquitto.acl) and no persistence.
type Mosquitto struct {
	t          testing.TB
	bin        string
	dir        string
	port       int
	secretPort int

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
}

// StartMosquitto starts a broker for t and stops it when t ends. The caller
// gates the test with Integration first; a missing mosquitto fails t.
func StartMosquitto(t testing.TB, tls MosquittoTLS) *Mosquitto {
	t.Helper()
	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		bin = LookPath(t, "mosquitto", "mosquitto")
	}
	m := &Mosquitto{t: t, bin: bin, dir: t.TempDir(), port: FreePort(t)}
	acl := filepath.Join(RepoRoot(t), "examples", "scaleout", "mosquitto.acl")
	conf := fmt.Sprintf(`per_listener_settings false
allow_anonymous false
persistence false
max_queued_messages 100000
max_inflight_messages 64
message_size_limit 1048576
# run as the user who started it (root on the test machines): the key
# files in the test's temp dir are not readable by the mosquitto user
user %s
log_dest file %s
log_type error
log_type warning
log_type notice
listener %d 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
acl_file %s
`, currentUser(), filepath.Join(m.dir, "mosquitto.log"), m.port, tls.CAFile, tls.CertFile, tls.KeyFile, acl)
	if tls.SecretRegistry != "" {
		plugin := buildAuthPlugin(t, m.dir)
		m.secretPort = FreePort(t)
		conf += fmt.Sprintf(`plugin %s
plugin_opt_registry %s
listener %d 127.0.0.1
certfile %s
keyfile %s
require_certificate false
`, plugin, tls.SecretRegistry, m.secretPort, tls.CertFile, tls.KeyFile)
	}
	if err := os.WriteFile(filepath.Join(m.dir, "mosquitto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.stop(syscall.SIGTERM, 3*time.Second) })
	m.Start()
	return m
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if os.Geteuid() == 0 {
		return "root"
	}
	return strconv.Itoa(os.Geteuid())
}

// Addr is the broker's host:port.
func (m *Mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

// SecretAddr is the host:port of the secret-login listener.
func (m *Mosquitto) SecretAddr() string { return "127.0.0.1:" + strconv.Itoa(m.secretPort) }

// buildAuthPlugin builds cmd/mosquitto-enos-auth as a shared object in dir
// (cgo; Debian mosquitto-dev and libmosquitto-dev for the headers).
func buildAuthPlugin(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "mosquitto-enos-auth.so")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, "./cmd/mosquitto-enos-auth")
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the mosquitto plugin (needs gcc, mosquitto-dev, libmosquitto-dev): %v\n%s", err, b)
	}
	return out
}

// Log is the broker's log.
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "mosquitto.log"))
	return string(b)
}

// Start starts the broker (again) and waits until it accepts connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil {
		return
	}
	out, err := os.OpenFile(filepath.Join(m.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	cmd := exec.Command(m.bin, "-c", filepath.Join(m.dir, "mosquitto.conf"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		m.t.Fatalf("start mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}()
	m.proc, m.done = cmd, done
	if err := WaitPort(m.Addr(), 10*time.Second); err != nil {
		m.stopLocked(syscall.SIGKILL, 0)
		stdout, _ := os.ReadFile(filepath.Join(m.dir, "stdout.log"))
		m.t.Fatalf("mosquitto (pid %d): %v\n%s\n%s", cmd.Process.Pid, err, stdout, m.Log())
	}
}

// Stop stops the broker with SIGTERM and waits for it to exit.
func (m *Mosquitto) Stop() { m.stop(syscall.SIGTERM, 3*time.Second) }

func (m *Mosquitto) stop(sig syscall.Signal, grace time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked(sig, grace)
}

// stopLocked signals our own process by its PID, never by name.
func (m *Mosquitto) stopLocked(sig syscall.Signal, grace time.Duration) {
	if m.proc == nil {
		return
	}
	p, done := m.proc.Process, m.done
	m.proc, m.done = nil, nil
	signalAndWait(m.t, "mosquitto", p, done, sig, grace)
}
