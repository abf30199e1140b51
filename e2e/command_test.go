package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

// commandSpec is a drive for pymodbus_server.py: a speed set-point at
// 0.1 rpm resolution (holding register 1), a run coil, a status register
// that is read-only in the profile.
const commandSpec = `{"units": {"1": {
  "size": {"hr": 10, "ir": 4, "co": 8, "di": 8},
  "hr": [{"address": 0, "type": "uint16", "value": 3},
         {"address": 1, "type": "uint16", "value": 250}],
  "co": [[0, false]]}}}`

const commandProfile = `profiles:
  - name: drive
    product_key: drivePK
    points:
      - {name: status, table: holding_register, address: 0, type: uint16}
      - {name: speed_sp, measure: speed, table: holding_register, address: 1, type: uint16, scale: 0.1, unit: rpm, access: readwrite}
      - {name: run, table: coil, address: 0, type: bool, access: readwrite}
`

// command posts a command to the ingest and returns the HTTP status and
// the reply document.
func (s *stack) command(token, pk, dk, service, params string) (int, map[string]any, error) {
	req, err := http.NewRequest("POST", s.ingestURL("/api/v1/devices/"+pk+"/"+dk+"/services/"+service+"?timeout=15s"), strings.NewReader(params))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%d %s: %w", resp.StatusCode, body, err)
	}
	return resp.StatusCode, doc, nil
}

// mbpollRead reads count holding registers (or coils) from 0 with mbpoll,
// an independent Modbus master.
func mbpollRead(t *testing.T, port int, table string, count int) string {
	t.Helper()
	out, err := exec.Command("mbpoll", "-m", "tcp", "-p", fmt.Sprint(port), "-a", "1", "-t", table, "-0", "-r", "0",
		"-c", fmt.Sprint(count), "-1", "-o", "2", "127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("mbpoll: %v\n%s", err, out)
	}
	var vals []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "[") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				vals = append(vals, strings.TrimSpace(v))
			}
		}
	}
	return strings.Join(vals, " ")
}

// TestCommandToDevice: a measurepoint/set posted to the ingest's HTTP API
// travels into edged's MQTT session (edged subscribes to no command
// topic), through the device model back to raw registers, to a pymodbus
// device; the reply comes back with the EnOS code, the device holds the
// values (read back by mbpoll), and the new values reach the ingest. The
// refusals carry their codes and write nothing.
func TestCommandToDevice(t *testing.T) {
	testsvc.Integration(t)
	if _, err := exec.LookPath("mbpoll"); err != nil {
		t.Fatalf("mbpoll is required (Debian mbpoll; scripts/provision.sh installs it): %v", err)
	}
	s := newStack(t)
	token := "e2e-admin-token"
	writeFile(t, filepath.Join(s.dir, "admin-token"), token+"\n")
	s.ingestArgs = append(s.ingestArgs, "-admin-token-file", filepath.Join(s.dir, "admin-token"))
	// the registry lets the gateway act for drivePK's devices
	writeFile(t, filepath.Join(s.dir, "registry.yaml"), "devices:\n  - {product_key: gwPK, device_key: gwDK, secret: gwSecret, cert_login: true, gateway: true,\n      sub_devices: [{product_key: drivePK, device_key: \"*\"}]}\n")
	port := testsvc.FreePort(t)
	spec := filepath.Join(s.dir, "drive.json")
	writeFile(t, spec, commandSpec)
	py := startReady(t, "pymodbus", "/usr/bin/python3", "../drivers/modbus/testdata/pymodbus_server.py", fmt.Sprint(port), spec)
	s.startIngestd()
	s.writeEdgedConfig(fmt.Sprintf(`links:
  - {name: drv, protocol: modbus-tcp, address: "127.0.0.1:%d", timeout: 500ms}
%sdevices:
  - {name: vfd-1, link: drv, profile: drive, unit_id: 1, poll: 5s}
`, port, commandProfile))
	s.startEdged()
	eventually(t, 20*time.Second, "the drive's first values stored", func() error {
		pts, err := s.latest("drivePK", "vfd-1")
		if err != nil {
			return err
		}
		if v, ok := pts["speed"].Value.(float64); !ok || v != 25 {
			return fmt.Errorf("speed = %v", pts["speed"])
		}
		return nil
	})

	// the command, and its reply
	start := time.Now()
	code, doc, err := s.command(token, "drivePK", "vfd-1", "measurepoint/set", `{"speed": 42.5, "run": "true"}`)
	took := time.Since(start)
	if err != nil || code != 200 || doc["code"] != 200.0 {
		t.Fatalf("measurepoint/set: HTTP %d, reply %v, %v", code, doc, err)
	}
	t.Logf("measurepoint/set answered in %s: %v", took.Round(time.Millisecond), doc)
	// the device holds the raw values
	if got := mbpollRead(t, port, "4", 2); got != "3 425" {
		t.Fatalf("holding registers 0-1 = %q, want \"3 425\" (status untouched, speed 42.5 at 0.1 resolution)", got)
	}
	if got := mbpollRead(t, port, "0", 1); got != "1" {
		t.Fatalf("coil 0 = %q, want 1", got)
	}
	// the written device is polled at once: the new values reach the
	// ingest well before the next 5 s poll
	eventually(t, 3*time.Second, "the new values stored", func() error {
		pts, err := s.latest("drivePK", "vfd-1")
		if err != nil {
			return err
		}
		if pts["speed"].Value != 42.5 || pts["run"].Value != true {
			return fmt.Errorf("speed %v, run %v", pts["speed"].Value, pts["run"].Value)
		}
		return nil
	})

	// refusals: each answered with its code; nothing is written
	for _, c := range []struct {
		dk, service, params string
		code                float64
		msg                 string
	}{
		{"vfd-1", "measurepoint/set", `{"speed": 10, "status": 1}`, 403, "read-only"},
		{"vfd-1", "measurepoint/set", `{"speed": 10, "torque": 1}`, 404, "unknown measure point"},
		{"vfd-1", "measurepoint/set", `{"speed": 10.05}`, 400, "not a multiple"},
		{"vfd-1", "measurepoint/set", `{"speed": 7000}`, 400, "out of range"},
		{"vfd-1", "measurepoint/set", `{"speed": null}`, 400, "malformed"},
		{"vfd-1", "restart", `{}`, 501, "not supported"},
		{"vfd-2", "measurepoint/set", `{"speed": 10}`, 404, "unknown device"},
	} {
		code, doc, err := s.command(token, "drivePK", c.dk, c.service, c.params)
		if err != nil || code != 200 || doc["code"] != c.code || !strings.Contains(fmt.Sprint(doc["message"]), c.msg) {
			t.Fatalf("%s %s %s: HTTP %d, reply %v (%v); want code %v with %q", c.dk, c.service, c.params, code, doc, err, c.code, c.msg)
		}
	}
	if got := mbpollRead(t, port, "4", 2); got != "3 425" {
		t.Fatalf("holding registers 0-1 = %q after the refused commands, want \"3 425\"", got)
	}

	// the device gone: edged answers 503 (link down) or 504 (no answer),
	// never hangs the caller
	py.stop(t, syscall.SIGKILL)
	code, doc, err = s.command(token, "drivePK", "vfd-1", "measurepoint/set", `{"speed": 1}`)
	if err != nil || code != 200 || (doc["code"] != 503.0 && doc["code"] != 504.0) {
		t.Fatalf("device down: HTTP %d, reply %v, %v; want code 503 or 504", code, doc, err)
	}
	t.Logf("device down: %v", doc)
	metrics := ""
	if err := getText(s.edgedURL("/metrics"), &metrics); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`edged_commands_total{result="200"} 1`, `edged_commands_total{result="403"} 1`, `edged_commands_total{result="501"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("edged /metrics lacks %s", want)
		}
	}
	if !bytes.Contains([]byte(metrics), []byte(`edged_writes_total{device="vfd-1",link="drv",result="ok"} 2`)) {
		t.Fatalf("edged /metrics: want 2 ok writes\n%s", grepLines(metrics, "edged_writes_total"))
	}
}

func getText(url string, out *string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	*out = string(b)
	return err
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
