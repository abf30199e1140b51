package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edged/edged/cloudlink"
	"github.com/edged/edged/connectivity"
	"github.com/edged/edged/modelsync/cloudsync"
)

func TestStatus(t *testing.T) {
	h := health{Status: "degraded", Gateway: "gw-1", Epoch: 42,
		HA:     haHealth{Kind: "etcd", Node: "a", Role: "active", Leader: "a", LeaderEpoch: 42, Standbys: []string{"b"}},
		Uplink: cloudlink.Health{Connected: true, LastAck: time.Now().Add(-2 * time.Second)},
		Bus:    busHealth{Depth: 3, Records: 120, Bytes: 4096, MaxBytes: 1 << 30, OldestAgeS: 65, Dropped: 7},
		Links: []connectivity.Health{{Link: "line-1", Up: true, Devices: []connectivity.DeviceHealth{
			{Device: "meter-1", Up: true, LastGood: time.Now()},
			{Device: "meter-2", Up: false, LastError: "device meter-2: timeout"},
		}}},
		Models: []cloudsync.ProductStatus{{ProductKey: "meterPK", Version: 2, Rejected: 3, LastError: "measure point \"current\" ..."}},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		writeJSON(w, http.StatusOK, h)
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	code := dispatch([]string{"status", "-addr", strings.TrimPrefix(srv.URL, "http://")}, &out, &errb)
	if code != 1 {
		t.Fatalf("exit %d for a degraded gateway, want 1 (stderr %q)", code, errb.String())
	}
	for _, want := range []string{
		"gateway gw-1: DEGRADED", "role     active (node a; group leader a, epoch 42; standbys b), epoch 42", "cloud    up, last ack 2s ago",
		"queue    120 records in 3 messages", "oldest 1m5s, 7 DROPPED", "model    meterPK version 2 (version 3 refused)",
		"meter-2  DOWN", "device meter-2: timeout",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if code := dispatch([]string{"status", "-addr", "127.0.0.1:1"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "is edged running?") {
		t.Fatalf("no edged: exit %d, stderr %q", code, errb.String())
	}
}
