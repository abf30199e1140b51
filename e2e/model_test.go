package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged/edged/internal/testsvc"
)

const modelSim = `unknown_unit: silent
units:
  - id: 1
    input_registers:
      - {name: v, address: 0, type: uint16, const: {value: 2301}}
      - {name: i, address: 1, type: uint16, const: {value: 1250}}
`

const modelProfile = `profiles:
  - name: meter
    product_key: meterPK
    points:
      - {name: v, measure: voltage, table: input_register, address: 0, type: uint16, scale: 0.1, unit: V}
      - {name: i, measure: current, table: input_register, address: 1, type: uint16, scale: 0.01, unit: A}
`

// model versions of meterPK: v1 as the profile; v2 wants voltage in kV;
// v3 drops current, which the gateway maps: refused.
const (
	modelV1 = `{"productKey":"meterPK","measurepoints":[
  {"identifier":"voltage","dataType":"float","unit":"V","hasQuality":true,"min":0,"max":1000},
  {"identifier":"current","dataType":"float","unit":"A","hasQuality":true}]}`
	modelV2 = `{"productKey":"meterPK","measurepoints":[
  {"identifier":"voltage","dataType":"float","unit":"kV","hasQuality":true,"min":0,"max":1},
  {"identifier":"current","dataType":"float","unit":"A","hasQuality":true}]}`
	modelV3 = `{"productKey":"meterPK","measurepoints":[
  {"identifier":"voltage","dataType":"float","unit":"kV","hasQuality":true}]}`
)

func (s *stack) api(method, url, token, body string) (int, string, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

type modelHealth struct {
	Models []struct {
		ProductKey string `json:"product_key"`
		Version    uint64 `json:"version"`
		LastError  string `json:"last_error"`
		Rejected   uint64 `json:"rejected_version"`
	} `json:"models"`
}

func (s *stack) modelVersion() (uint64, string, uint64, error) {
	var h modelHealth
	if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
		return 0, "", 0, err
	}
	for _, m := range h.Models {
		if m.ProductKey == "meterPK" {
			return m.Version, m.LastError, m.Rejected, nil
		}
	}
	return 0, "", 0, fmt.Errorf("no meterPK in /healthz models: %+v", h)
}

// TestModelLiveUpdate: the cloud owns meterPK's model. edged fetches it,
// applies a new version (voltage in kV) live — no reconnect to the device
// or the cloud, no sample lost —, refuses a version that drops a measure
// point it maps (keeping the last good one), and starts from the stored
// model when the cloud is away.
func TestModelLiveUpdate(t *testing.T) {
	testsvc.Integration(t)
	s := newStack(t)
	token := "e2e-admin-token"
	writeFile(t, filepath.Join(s.dir, "admin-token"), token+"\n")
	s.ingestArgs = append(s.ingestArgs, "-admin-token-file", filepath.Join(s.dir, "admin-token"))
	s.startIngestd()
	put := func(body string) {
		t.Helper()
		code, resp, err := s.api("PUT", s.ingestURL("/api/v1/models/meterPK"), token, body)
		if err != nil || code != 200 && code != 201 {
			t.Fatalf("PUT model: %d %s %v", code, resp, err)
		}
	}
	put(modelV1)
	addr, _ := s.startSim("meter-sim", modelSim)
	s.writeEdgedConfig(fmt.Sprintf(`links:
  - {name: m, protocol: modbus-tcp, address: "%s", timeout: 500ms}
%sdevices:
  - {name: meter-1, link: m, profile: meter, unit_id: 1, poll: 100ms}
`, addr, modelProfile))
	s.startEdged()
	waitVersion := func(want uint64) {
		t.Helper()
		eventually(t, 20*time.Second, fmt.Sprintf("edged running model version %d", want), func() error {
			v, e, _, err := s.modelVersion()
			if err == nil && v != want {
				err = fmt.Errorf("version %d (%s)", v, e)
			}
			return err
		})
	}
	waitVoltage := func(want float64, after int64) {
		t.Helper()
		eventually(t, 10*time.Second, fmt.Sprintf("voltage %g stored", want), func() error {
			pts, err := s.latest("meterPK", "meter-1")
			if err != nil {
				return err
			}
			p := pts["voltage"]
			v, ok := p.Value.(float64)
			if !ok || math.Abs(v-want) > 1e-9 || p.Time <= after {
				return fmt.Errorf("voltage %+v", p)
			}
			return nil
		})
	}
	waitVersion(1)
	waitVoltage(230.1, 0)

	counters := func() (float64, float64) {
		t.Helper()
		up, err := s.metric("edged_uplink_session_errors_total")
		if err != nil {
			t.Fatal(err)
		}
		links, err := s.metric(`edged_link_errors_total{link="m"}`)
		if err != nil {
			links = 0 // never incremented: not exported yet
		}
		return up, links
	}
	up0, links0 := counters()

	// v2: voltage in kV, applied live when edged is told to check
	put(modelV2)
	if code, body, err := s.api("POST", s.edgedURL("/api/v1/models/sync"), "", ""); err != nil || code != 202 {
		t.Fatalf("POST /api/v1/models/sync: %d %s %v", code, body, err)
	}
	waitVersion(2)
	waitVoltage(0.2301, time.Now().UnixMilli())

	// v3 drops a mapped measure point: refused, v2 stays
	put(modelV3)
	s.api("POST", s.edgedURL("/api/v1/models/sync"), "", "")
	eventually(t, 20*time.Second, "model version 3 refused", func() error {
		v, e, rej, err := s.modelVersion()
		if err == nil && (v != 2 || rej != 3 || !strings.Contains(e, "current")) {
			err = fmt.Errorf("version %d, rejected %d, error %q", v, rej, e)
		}
		return err
	})
	if n, err := s.metric(`edged_model_rejected_total{product_key="meterPK"}`); err != nil || n != 1 {
		t.Fatalf("edged_model_rejected_total = %v, %v", n, err)
	}
	waitVoltage(0.2301, time.Now().UnixMilli()) // still flowing on v2

	if up1, links1 := counters(); up1 != up0 || links1 != links0 {
		t.Fatalf("the model updates cost a reconnect: uplink session errors %v→%v, link errors %v→%v", up0, up1, links0, links1)
	}

	// offline start: the cloud away, edged restarts from the stored v2
	s.edged.stop(t, syscall.SIGTERM)
	s.ingestd.stop(t, syscall.SIGTERM)
	s.startEdged()
	waitVersion(2)
	s.startIngestd()
	waitVoltage(0.2301, time.Now().UnixMilli())

	// nothing lost: every sequence stored once, across the swaps and the restart
	s.edged.stop(t, syscall.SIGTERM)
	got, doc, err := s.stored()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stored %d records, %d duplicates refused", len(got), doc.Duplicates)
	var maxSeq uint64
	for q := range got {
		maxSeq = max(maxSeq, q)
	}
	for q := uint64(1); q <= maxSeq; q++ {
		if !got[q] {
			t.Fatalf("sequence %d of 1..%d missing: a sample was lost", q, maxSeq)
		}
	}
}
