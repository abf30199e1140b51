package e2e

import (
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

// constSim holds one constant of every kind, in several byte orders, so the
// values that reach the ingest can be checked exactly.
const constSim = `unknown_unit: silent
units:
  - id: 1
    input_registers:
      - {name: f32, address: 0, type: float32, order: ABCD, const: {value: 230.5}}
      - {name: f32_cdab, address: 2, type: float32, order: CDAB, const: {value: -12.25}}
      - {name: i16, address: 4, type: int16, const: {value: -405}}
      - {name: u32_dcba, address: 5, type: uint32, order: DCBA, const: {value: 4000000000}}
      - {name: f64_badc, address: 7, type: float64, order: BADCFEHG, const: {value: 3.141592653589793}}
      - {name: i32_badc, address: 11, type: int32, order: BADC, const: {value: -123456}}
    holding_registers:
      - {name: u16, address: 0, type: uint16, const: {value: 100}}
    coils:
      - {name: c, address: 0, const: {value: 1}}
    discrete_inputs:
      - {name: d, address: 0, const: {value: 0}}
`

const constProfile = `profiles:
  - name: consts
    product_key: constPK
    points:
      - {name: f32, table: input_register, address: 0, type: float32, order: ABCD, unit: V}
      - {name: f32_cdab, table: input_register, address: 2, type: float32, order: CDAB}
      - {name: i16, table: input_register, address: 4, type: int16, scale: 0.1, unit: °C}
      - {name: u32_dcba, table: input_register, address: 5, type: uint32, order: DCBA}
      - {name: f64_badc, table: input_register, address: 7, type: float64, order: BADCFEHG}
      - {name: i32_badc, measure: scaled, table: input_register, address: 11, type: int32, order: BADC, scale: 0.01, offset: 1}
      - {name: u16, table: holding_register, address: 0, type: uint16}
      - {name: c, table: coil, address: 0, type: bool}
      - {name: d, table: discrete_input, address: 0, type: bool}
`

// wantConst is what the ingest must hold: scaled and typed as configured.
var wantConst = map[string]any{
	"f32":      230.5,
	"f32_cdab": -12.25,
	"i16":      -40.5,
	"u32_dcba": 4000000000.0,
	"f64_badc": 3.141592653589793,
	"scaled":   -1233.56,
	"u16":      100.0,
	"c":        true,
	"d":        false,
}

// waitConsts waits until the ingest holds every value of wantConst for
// device dk of product constPK.
func (s *stack) waitConsts(dk string, timeout time.Duration) {
	s.t.Helper()
	eventually(s.t, timeout, dk+": every value at the ingest, scaled and typed", func() error {
		pts, err := s.latest("constPK", dk)
		if err != nil {
			return err
		}
		return checkConsts(pts)
	})
}

func checkConsts(pts map[string]latestPoint) error {
	for id, want := range wantConst {
		p, ok := pts[id]
		if !ok {
			return fmt.Errorf("measure point %q not at the ingest yet (have %d points)", id, len(pts))
		}
		if p.Quality != "" && p.Quality != "good" {
			return fmt.Errorf("%s: quality %q (%s)", id, p.Quality, p.Reason)
		}
		switch w := want.(type) {
		case bool:
			if p.Value != w {
				return fmt.Errorf("%s = %v (%T), want %v", id, p.Value, p.Value, w)
			}
		case float64:
			f, ok := p.Value.(float64)
			if !ok || math.Abs(f-w) > 1e-9*math.Max(1, math.Abs(w)) {
				return fmt.Errorf("%s = %v (%T), want %v", id, p.Value, p.Value, w)
			}
		}
	}
	return nil
}

func TestSimulatorToIngest(t *testing.T) {
	testsvc.Integration(t)
	s := newStack(t)
	simAddr, _ := s.startSim("sim", constSim)
	s.startIngestd()
	s.writeEdgedConfig(fmt.Sprintf(`links:
  - {name: sim, protocol: modbus-tcp, address: %q, timeout: 500ms}
%sdevices:
  - {name: dev-1, link: sim, profile: consts, unit_id: 1, poll: 200ms}
  - {name: dev-absent, link: sim, profile: consts, unit_id: 9, poll: 200ms}
`, simAddr, constProfile))
	s.startEdged()

	s.waitConsts("dev-1", 20*time.Second)
	// the device that does not exist (unit 9 times out) is reported bad with
	// its reason, and did not stop dev-1
	eventually(t, 20*time.Second, "the absent device reported bad", func() error {
		pts, err := s.latest("constPK", "dev-absent")
		if err != nil {
			return err
		}
		p, ok := pts["f32"]
		if !ok || p.Quality != "bad" || p.Reason != "timeout" {
			return fmt.Errorf("dev-absent f32 = %+v", p)
		}
		return nil
	})
	var h struct {
		Status string `json:"status"`
		Links  []struct {
			Devices []struct {
				Device    string `json:"device"`
				Up        bool   `json:"up"`
				LastError string `json:"last_error"`
			} `json:"devices"`
		} `json:"links"`
		Uplink struct {
			Connected bool `json:"connected"`
		} `json:"uplink"`
	}
	if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
		t.Fatal(err)
	}
	if h.Status != "degraded" || !h.Uplink.Connected || len(h.Links) != 1 || !h.Links[0].Devices[0].Up || h.Links[0].Devices[1].Up ||
		!strings.Contains(h.Links[0].Devices[1].LastError, "dev-absent") {
		t.Fatalf("edged /healthz = %+v", h)
	}
}

// pymodbusSpec is constSim for pymodbus_server.py.
const pymodbusSpec = `{"units": {"1": {
  "size": {"hr": 10, "ir": 20, "co": 8, "di": 8},
  "ir": [{"address": 0, "type": "float32", "order": "ABCD", "value": 230.5},
         {"address": 2, "type": "float32", "order": "CDAB", "value": -12.25},
         {"address": 4, "type": "int16", "value": -405},
         {"address": 5, "type": "uint32", "order": "DCBA", "value": 4000000000},
         {"address": 7, "type": "float64", "order": "BADCFEHG", "value": 3.141592653589793},
         {"address": 11, "type": "int32", "order": "BADC", "value": -123456}],
  "hr": [{"address": 0, "type": "uint16", "value": 100}],
  "co": [[0, true]],
  "di": [[0, false]]}}}`

// TestPymodbusToIngest: the same path with an independent Modbus
// implementation as the device.
func TestPymodbusToIngest(t *testing.T) {
	testsvc.Integration(t)
	if _, err := exec.LookPath("/usr/bin/python3"); err != nil {
		t.Fatalf("/usr/bin/python3 is required (Debian python3-pymodbus): %v", err)
	}
	s := newStack(t)
	port := testsvc.FreePort(t)
	spec := filepath.Join(s.dir, "pymodbus.json")
	writeFile(t, spec, pymodbusSpec)
	// the driver tests' pymodbus server: every value encoded by Python's struct
	startReady(t, "pymodbus", "/usr/bin/python3", "../drivers/modbus/testdata/pymodbus_server.py", fmt.Sprint(port), spec)
	s.startIngestd()
	s.writeEdgedConfig(fmt.Sprintf(`links:
  - {name: py, protocol: modbus-tcp, address: "127.0.0.1:%d", timeout: 500ms}
%sdevices:
  - {name: dev-1, link: py, profile: consts, unit_id: 1, poll: 200ms}
`, port, constProfile))
	s.startEdged()
	s.waitConsts("dev-1", 20*time.Second)
}

type seqDoc struct {
	Epochs []struct {
		Epoch  uint64      `json:"epoch"`
		Ranges [][2]uint64 `json:"ranges"`
		Count  uint64      `json:"count"`
	} `json:"epochs"`
	Duplicates uint64 `json:"duplicates"`
}

// stored returns every sequence number the ingest holds for the gateway,
// failing on one stored twice.
func (s *stack) stored() (map[uint64]bool, seqDoc, error) {
	var doc seqDoc
	if err := getJSON(s.ingestURL("/api/v1/gateways/"+s.gatewayID+"/sequences"), &doc); err != nil {
		return nil, doc, err
	}
	seen := map[uint64]bool{}
	for _, e := range doc.Epochs {
		for _, r := range e.Ranges {
			for q := r[0]; q <= r[1]; q++ {
				if seen[q] {
					return nil, doc, fmt.Errorf("sequence %d stored twice (epochs %+v)", q, doc.Epochs)
				}
				seen[q] = true
			}
		}
	}
	return seen, doc, nil
}

type edgedHealth struct {
	Epoch uint64 `json:"epoch"`
	Bus   struct {
		Depth   int    `json:"depth"`
		Records uint64 `json:"records"`
		NextSeq uint64 `json:"next_seq"`
	} `json:"bus"`
}

// TestKill9NothingLost kills edged and ingestd with SIGKILL in the middle of
// a stream, restarts them, and checks that every sequence number edged ever
// assigned is stored exactly once at the ingest.
func TestKill9NothingLost(t *testing.T) {
	testsvc.Integration(t)
	s := newStack(t)
	simAddr, sim := s.startSim("sim", constSim)
	s.startIngestd()
	var devs strings.Builder
	for i := range 20 {
		fmt.Fprintf(&devs, "  - {name: dev-%02d, link: sim, profile: consts, unit_id: 1, poll: 50ms}\n", i)
	}
	s.writeEdgedConfig(fmt.Sprintf("links:\n  - {name: sim, protocol: modbus-tcp, address: %q, timeout: 500ms}\n%sdevices:\n%s", simAddr, constProfile, devs.String()))
	s.startEdged()

	waitStored := func(min int) {
		eventually(t, 30*time.Second, fmt.Sprintf("at least %d records stored", min), func() error {
			seen, _, err := s.stored()
			if err != nil {
				return err
			}
			if len(seen) < min {
				return fmt.Errorf("%d stored", len(seen))
			}
			return nil
		})
	}
	waitStored(200)
	s.edged.stop(t, syscall.SIGKILL) // kill -9 mid-stream
	s.startEdged()
	waitStored(600)
	s.ingestd.stop(t, syscall.SIGKILL) // the cloud dies; edged keeps polling into its queue
	time.Sleep(2 * time.Second)
	var h edgedHealth
	if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
		t.Fatal(err)
	}
	if h.Bus.Records == 0 {
		t.Fatalf("with the ingest down, edged's queue is empty: %+v", h)
	}
	s.startIngestd()
	waitStored(1200)
	s.edged.stop(t, syscall.SIGKILL)
	s.startEdged()

	// stop the device: edged reports it bad once, then produces nothing more,
	// so the queue drains and the count settles
	sim.stop(t, syscall.SIGTERM)
	var final edgedHealth
	eventually(t, 60*time.Second, "edged's queue drained", func() error {
		if err := getJSON(s.edgedURL("/healthz"), &final); err != nil {
			return err
		}
		if final.Bus.Depth != 0 {
			return fmt.Errorf("queue depth %d", final.Bus.Depth)
		}
		return nil
	})
	if final.Epoch < 3 {
		t.Fatalf("epoch %d after two restarts, want ≥ 3", final.Epoch)
	}
	seen, doc, err := s.stored()
	if err != nil {
		t.Fatal(err)
	}
	last := final.Bus.NextSeq - 1
	var missing []uint64
	for q := uint64(1); q <= last; q++ {
		if !seen[q] {
			missing = append(missing, q)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d sequence numbers lost, first %v", len(missing), last, missing[:min(len(missing), 10)])
	}
	if len(seen) != int(last) {
		extra := []uint64{}
		for q := range seen {
			if q > last {
				extra = append(extra, q)
			}
		}
		sort.Slice(extra, func(i, j int) bool { return extra[i] < extra[j] })
		t.Fatalf("ingest holds %d sequence numbers, edged assigned %d (extra: %v)", len(seen), last, extra)
	}
	t.Logf("%d records stored exactly once across 3 kill -9s; %d duplicates discarded by the ingest; epochs %d", last, doc.Duplicates, len(doc.Epochs))
}

func TestConfigErrorsRefuseToStart(t *testing.T) {
	testsvc.Integration(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	writeFile(t, path, "gateway:\n  id: gw\n  colour: blue\n")
	for _, args := range [][]string{{"validate", path}, {"run", "-config", path}} {
		out, err := exec.Command(filepath.Join(binDir, "edged"), args...).CombinedOutput()
		if err == nil {
			t.Fatalf("edged %v accepted a broken config:\n%s", args, out)
		}
		if want := path + `:3: unknown field "colour"`; !strings.Contains(string(out), want) {
			t.Fatalf("edged %v said:\n%s\nwant a line containing %s", args, out, want)
		}
	}
}
