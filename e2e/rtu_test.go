package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

// TestRTUToIngest: pymodbus as an RTU device on a serial line (one end of a
// socat pty pair), edged on the other end, two unit ids on the line and a
// third that is absent: the present ones arrive scaled and typed, the absent
// one is reported bad, and it does not stop the others.
func TestRTUToIngest(t *testing.T) {
	testsvc.Integration(t)
	for _, bin := range []string{"socat", "/usr/bin/python3"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is required (apt-get install socat python3-pymodbus): %v", bin, err)
		}
	}
	s := newStack(t)
	srv, cli := filepath.Join(s.dir, "ttyS-srv"), filepath.Join(s.dir, "ttyS-cli")
	start(t, "socat", "socat", "-d", "-d", "pty,raw,echo=0,link="+srv, "pty,raw,echo=0,link="+cli)
	eventually(t, 10*time.Second, "the pty pair", func() error {
		for _, p := range []string{srv, cli} {
			if _, err := os.Stat(p); err != nil {
				return err
			}
		}
		return nil
	})
	spec := filepath.Join(s.dir, "rtu.json")
	// units 1 and 2 hold the same constants as the TCP tests
	writeFile(t, spec, strings.Replace(pymodbusSpec, `{"units": {"1": {`, `{"units": {"2": {
  "size": {"hr": 10, "ir": 20, "co": 8, "di": 8},
  "ir": [{"address": 0, "type": "float32", "order": "ABCD", "value": 49.98}],
  "co": [[0, false]]}, "1": {`, 1))
	startReady(t, "pymodbus-rtu", "/usr/bin/python3", "../drivers/modbus/testdata/pymodbus_rtu_server.py", "serial", srv, "19200", spec)
	s.startIngestd()
	s.writeEdgedConfig(fmt.Sprintf(`links:
  - {name: rs485, protocol: modbus-rtu, device: %q, baud: 19200, parity: none, timeout: 300ms}
%s  - name: small
    product_key: constPK
    points:
      - {name: f, register: 30001, type: float32}
      - {name: c, register: 1, type: bool}
devices:
  - {name: rtu-1, link: rs485, profile: consts, unit_id: 1, poll: 300ms}
  - {name: rtu-2, link: rs485, profile: small, unit_id: 2, poll: 300ms}
  - {name: rtu-absent, link: rs485, profile: small, unit_id: 9, poll: 300ms}
`, cli, constProfile))
	s.startEdged()
	s.waitConsts("rtu-1", 30*time.Second)
	eventually(t, 30*time.Second, "unit 2 and the absent unit", func() error {
		pts, err := s.latest("constPK", "rtu-2")
		if err != nil {
			return err
		}
		if p := pts["f"]; p.Value != 49.98 || p.Quality != "good" {
			return fmt.Errorf("rtu-2 f = %+v", p)
		}
		if p := pts["c"]; p.Value != false || p.Quality != "good" {
			return fmt.Errorf("rtu-2 c = %+v", p)
		}
		abs, err := s.latest("constPK", "rtu-absent")
		if err != nil {
			return err
		}
		if p := abs["f"]; p.Quality != "bad" || p.Reason != "timeout" {
			return fmt.Errorf("rtu-absent f = %+v", p)
		}
		return nil
	})
	// the absent unit does not stall the line: unit 2 keeps being polled
	first, _ := s.latest("constPK", "rtu-2")
	time.Sleep(2 * time.Second)
	later, _ := s.latest("constPK", "rtu-2")
	if later["f"].Time <= first["f"].Time {
		t.Fatalf("unit 2 was not polled again in 2 s while unit 9 was absent (time %d -> %d)", first["f"].Time, later["f"].Time)
	}
}
