// Package testsvc starts the real services the integration tests talk to
// (Redis, ActiveMQ) as plain processes on loopback, one private instance per
// test, and stops them when the test ends.
//
// Integration tests run only when EDGED_INTEGRATION=1 (make test sets it);
// then a missing program is a failure, not a skip.
package testsvc

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// Env is the variable that enables the integration tests.
const Env = "EDGED_INTEGRATION"

// Integration skips t unless the integration tests are enabled.
func Integration(t testing.TB) {
	t.Helper()
	if os.Getenv(Env) != "1" {
		t.Skipf("integration test: set %s=1 (make test does) to run it against the real services", Env)
	}
}

// LookPath returns the path of program, failing t when it is missing: the
// integration tests never skip for lack of a service.
func LookPath(t testing.TB, program, debianPackage string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		t.Fatalf("%s=1 but %s is not installed (apt-get install -y %s, or run make test, which provisions it): %v", Env, program, debianPackage, err)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitPort waits until addr accepts TCP connections or the deadline passes.
func WaitPort(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %s: %w", addr, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signalAndWait signals our own process p by its PID, never by name, and
// waits until done is closed (its Wait returned); a process that ignores
// sig for grace is killed. SIGKILL is waited for without a grace.
func signalAndWait(t testing.TB, name string, p *os.Process, done <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	_ = p.Signal(sig)
	if sig != syscall.SIGKILL {
		select {
		case <-done:
			return
		case <-time.After(grace):
			t.Logf("testsvc: %s pid %d ignored %v for %s; killing it", name, p.Pid, sig, grace)
			_ = p.Kill()
		}
	}
	<-done
}
