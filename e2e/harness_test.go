// Package e2e runs the real binaries together: the simulator (or pymodbus)
// as the device, ingestd as the cloud, edged in between, all on loopback.
// The tests are integration tests: they run when EDGED_INTEGRATION=1 (as
// `make test` sets it) and are skipped otherwise.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/certs"
	"github.com/edged/edged/internal/testsvc"
)

var binDir string

func TestMain(m *testing.M) {
	if os.Getenv("EDGED_INTEGRATION") != "1" {
		fmt.Println("e2e: EDGED_INTEGRATION is not 1; skipping the end-to-end tests")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "edged-e2e-bin-")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	binDir = dir
	for _, c := range []string{"edged", "ingestd"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../cmd/"+c)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Println("e2e: build", c, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a process a test started; the test's cleanup stops it.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *syncBuf
	done chan struct{}
	err  error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, name string, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	p := &proc{name: name, cmd: cmd, log: &syncBuf{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// an open stdin: a helper that exits when its stdin closes cannot
	// outlive the test
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t, syscall.SIGTERM)
		stdin.Close()
		if t.Failed() {
			t.Logf("---- %s log ----\n%s", name, lastLines(p.log.String(), 60))
		}
	})
	return p
}

// startReady starts a helper that prints "ready" once it serves, and waits
// for that line.
func startReady(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	p := start(t, name, bin, args...)
	eventually(t, 15*time.Second, name+" ready", func() error {
		if p.exited() {
			return fmt.Errorf("%s exited: %s", name, p.log.String())
		}
		if !strings.Contains(p.log.String(), "ready") {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	return p
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop sends sig and waits (SIGKILL after 15 s). Stopping a stopped process
// is a no-op.
func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not stop on %v within 15s; killing it", p.name, sig)
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// eventually polls f every 100 ms until it returns nil or the timeout ends.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

// stack is one simulator/ingestd/edged set-up in a temp dir.
type stack struct {
	t          *testing.T
	dir        string
	certs      certs.DevFiles
	mqttPort   int
	httpPort   int
	edgedHTTP  int
	ingestd    *proc
	edged      *proc
	gatewayID  string
	edgedConf  string
	ingestArgs []string
	cloudExtra string // more lines of edged's cloud section, indented by two spaces
}

func newStack(t *testing.T) *stack {
	t.Helper()
	dir := t.TempDir()
	files, err := certs.MakeDev(filepath.Join(dir, "certs"), certs.DevOptions{GatewayCN: "gwDK"})
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, certs: files, mqttPort: testsvc.FreePort(t), httpPort: testsvc.FreePort(t), edgedHTTP: testsvc.FreePort(t), gatewayID: "gw-e2e"}
	reg := "devices:\n  - {product_key: gwPK, device_key: gwDK, secret: gwSecret, cert_login: true, gateway: true,\n      sub_devices: [{product_key: constPK, device_key: \"*\"}, {product_key: meterPK, device_key: \"*\"}]}\n"
	writeFile(t, filepath.Join(dir, "registry.yaml"), reg)
	s.ingestArgs = []string{"run",
		"-mqtt", fmt.Sprintf("127.0.0.1:%d", s.mqttPort), "-http", fmt.Sprintf("127.0.0.1:%d", s.httpPort),
		"-data", filepath.Join(dir, "ingest-data"),
		"-cert", files.ServerCert, "-key", files.ServerKey, "-client-ca", files.CACert,
		"-registry", filepath.Join(dir, "registry.yaml"),
	}
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *stack) startIngestd() {
	s.t.Helper()
	s.ingestd = start(s.t, "ingestd", filepath.Join(binDir, "ingestd"), s.ingestArgs...)
	eventually(s.t, 15*time.Second, "ingestd healthy", func() error {
		var h map[string]any
		return getJSON(s.ingestURL("/healthz"), &h)
	})
}

func (s *stack) ingestURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", s.httpPort, path)
}

func (s *stack) edgedURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", s.edgedHTTP, path)
}

// writeEdgedConfig writes edged.yaml with the cloud section filled in and the
// links, profiles and devices given.
func (s *stack) writeEdgedConfig(body string) string {
	s.t.Helper()
	conf := fmt.Sprintf(`gateway:
  id: %s
  data_dir: edged-data
cloud:
  broker: tls://127.0.0.1:%d
  ca: certs/ca.pem
  cert: certs/gateway.pem
  key: certs/gateway-key.pem
  product_key: gwPK
  device_key: gwDK
  secret: gwSecret
  linger: 20ms
%smetrics:
  listen: 127.0.0.1:%d
`, s.gatewayID, s.mqttPort, s.cloudExtra, s.edgedHTTP) + body
	s.edgedConf = filepath.Join(s.dir, "edged.yaml")
	writeFile(s.t, s.edgedConf, conf)
	return s.edgedConf
}

func (s *stack) startEdged() {
	s.t.Helper()
	s.edged = start(s.t, "edged", filepath.Join(binDir, "edged"), "run", "-config", s.edgedConf, "-drain", "10s")
	eventually(s.t, 15*time.Second, "edged serving /healthz", func() error {
		if s.edged.exited() {
			return fmt.Errorf("edged exited: %v\n%s", s.edged.err, s.edged.log.String())
		}
		var h map[string]any
		return getJSON(s.edgedURL("/healthz"), &h)
	})
}

// latest is the ingest's latest-values document for a device.
type latestPoint struct {
	Value   any    `json:"value"`
	Quality string `json:"quality"`
	Reason  string `json:"reason"`
	Time    int64  `json:"time"`
}

func (s *stack) latest(pk, dk string) (map[string]latestPoint, error) {
	var doc struct {
		Points map[string]latestPoint `json:"points"`
	}
	if err := getJSON(s.ingestURL("/api/v1/devices/"+pk+"/"+dk+"/latest"), &doc); err != nil {
		return nil, err
	}
	return doc.Points, nil
}

// startSim starts `edged sim modbus` with the given register map and returns
// its address.
func (s *stack) startSim(name, simYAML string) (string, *proc) {
	s.t.Helper()
	path := filepath.Join(s.dir, name+".yaml")
	writeFile(s.t, path, simYAML)
	addr := fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(s.t))
	p := start(s.t, name, filepath.Join(binDir, "edged"), "sim", "modbus", "-config", path, "-listen", addr)
	eventually(s.t, 10*time.Second, name+" listening", func() error {
		if p.exited() {
			return fmt.Errorf("%s exited: %s", name, p.log.String())
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return addr, p
}
