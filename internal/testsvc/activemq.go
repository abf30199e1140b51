package testsvc

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// ActiveMQ is a private ActiveMQ Classic broker for one test, run by
// scripts/activemq.sh (the same launcher make test and developers use).
type ActiveMQ struct {
	t       testing.TB
	script  string
	base    string
	port    int
	sslPort int
	tlsArgs []string
}

// BrokerTLS asks StartActiveMQ for a stomp+ssl listener that requires a
// client certificate signed by CA.
type BrokerTLS struct {
	CA, Cert, Key string // PEM files
}

// StartActiveMQ starts a broker with a STOMP listener on a free loopback
// port (and stomp+ssl when tls is given), and stops it when the test ends.
func StartActiveMQ(t testing.TB, tls *BrokerTLS) *ActiveMQ {
	t.Helper()
	a := NewActiveMQ(t, tls)
	a.Start()
	return a
}

// NewActiveMQ prepares a broker like StartActiveMQ but does not start it:
// for tests of a broker that is down when its clients start.
func NewActiveMQ(t testing.TB, tls *BrokerTLS) *ActiveMQ {
	t.Helper()
	LookPath(t, "java", "default-jre-headless")
	if _, err := os.Stat("/usr/share/activemq/bin/activemq.jar"); err != nil {
		t.Fatalf("%s=1 but ActiveMQ is not installed (apt-get install -y activemq, or run make test, which provisions it): %v", Env, err)
	}
	a := &ActiveMQ{t: t, script: filepath.Join(RepoRoot(t), "scripts", "activemq.sh"), base: t.TempDir(), port: FreePort(t)}
	if tls != nil {
		a.sslPort = FreePort(t)
		a.tlsArgs = []string{strconv.Itoa(a.sslPort), tls.CA, tls.Cert, tls.Key}
	}
	t.Cleanup(a.Stop)
	return a
}

// Addr is the STOMP listener, host:port.
func (a *ActiveMQ) Addr() string { return "127.0.0.1:" + strconv.Itoa(a.port) }

// TLSAddr is the stomp+ssl listener ("" without TLS).
func (a *ActiveMQ) TLSAddr() string {
	if a.sslPort == 0 {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(a.sslPort)
}

// Start starts the broker (again) on the same ports and store.
func (a *ActiveMQ) Start() {
	a.t.Helper()
	a.run(append([]string{"start", a.base, strconv.Itoa(a.port)}, a.tlsArgs...)...)
}

// Stop stops the broker with SIGTERM (a clean shutdown).
func (a *ActiveMQ) Stop() { a.t.Helper(); a.run("stop", a.base) }

// Kill stops the broker with SIGKILL (a crash).
func (a *ActiveMQ) Kill() { a.t.Helper(); a.run("kill", a.base) }

// Log is the broker's log file.
func (a *ActiveMQ) Log() string { return filepath.Join(a.base, "activemq.log") }

func (a *ActiveMQ) run(args ...string) {
	a.t.Helper()
	out, err := exec.Command("bash", append([]string{a.script}, args...)...).CombinedOutput()
	if err != nil {
		a.t.Fatalf("activemq.sh %v: %v\n%s", args, err, out)
	}
}

// RepoRoot is the repository's top directory (where go.mod is).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testsvc: cannot find its own source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}
