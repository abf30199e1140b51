package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edged/edged/internal/testsvc"
)

// backboneHealth is the part of edged's /healthz these tests read.
type backboneHealth struct {
	Status string `json:"status"`
	Epoch  uint64 `json:"epoch"`
	Bus    struct {
		Depth   int    `json:"depth"`
		Records uint64 `json:"records"`
		NextSeq uint64 `json:"next_seq"`
	} `json:"bus"`
	Broker *struct {
		Up    bool   `json:"up"`
		Error string `json:"error"`
	} `json:"broker"`
}

// metric reads one unlabelled sample from edged's /metrics.
func (s *stack) metric(name string) (float64, error) {
	resp, err := http.Get(s.edgedURL("/metrics"))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("metric %s not found", name)
}

// TestBackboneFaults runs simulator → edged (bus: ActiveMQ, cache: Redis) →
// ingestd, all real, through every fault of the production backbone in
// turn: the broker down at start, a broker restart (SIGTERM) and crash
// (SIGKILL) mid-stream, edged killed with SIGKILL, a foreign message on the
// queue, Redis stopped and started, and a switch of bus and cache kinds to
// the embedded defaults and back with a backlog waiting. At the end every
// sequence number edged assigned is stored exactly once at the ingest.
func TestBackboneFaults(t *testing.T) {
	testsvc.Integration(t)
	s := newStack(t)
	amq := testsvc.NewActiveMQ(t, nil) // not started: edged must start without it
	rds := testsvc.StartRedis(t)
	simAddr, sim := s.startSim("sim", constSim)
	s.startIngestd()
	var devs strings.Builder
	for i := range 10 {
		fmt.Fprintf(&devs, "  - {name: dev-%02d, link: sim, profile: consts, unit_id: 1, poll: 50ms}\n", i)
	}
	// the kinds are switched in step 6; both sections stay in the file
	conf := func(busKind, cacheKind string) string {
		return s.writeEdgedConfig(fmt.Sprintf(`bus:
  kind: %s
  activemq: {address: %q, heartbeat: 1s}
cache:
  kind: %s
  redis: {address: %q}
links:
  - {name: sim, protocol: modbus-tcp, address: %q, timeout: 500ms}
%sdevices:
%s`, busKind, amq.Addr(), cacheKind, rds.Addr(), simAddr, constProfile, devs.String()))
	}
	conf("activemq", "redis")
	s.startEdged()

	health := func() backboneHealth {
		var h backboneHealth
		if err := getJSON(s.edgedURL("/healthz"), &h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	storedCount := func() int {
		seen, _, err := s.stored()
		if err != nil {
			if strings.Contains(err.Error(), "unknown gateway") { // nothing stored yet
				return 0
			}
			t.Fatal(err)
		}
		return len(seen)
	}
	waitMore := func(what string, n int) {
		t.Helper()
		target := storedCount() + n
		eventually(t, 60*time.Second, fmt.Sprintf("%d more records stored after %s", n, what), func() error {
			if c := storedCount(); c < target {
				return fmt.Errorf("%d stored, want %d", c, target)
			}
			return nil
		})
	}

	// 1. the broker is down at start: edged runs, says so, and spills
	eventually(t, 15*time.Second, "edged reports the broker down and spills records to its outbox", func() error {
		h := health()
		if h.Broker == nil || h.Broker.Up || h.Status != "degraded" || h.Bus.Records < 50 {
			return fmt.Errorf("health = %+v broker %+v", h, h.Broker)
		}
		return nil
	})
	// Fresh records still reach the cloud through the uplink's real-time
	// path (each is durable in the local outbox first); the consumer acks
	// them once the broker is back and delivers them. Exactly-once is
	// checked at the end.
	eventually(t, 15*time.Second, "fresh records delivered through the real-time path while the broker is down", func() error {
		ahead, err := s.metric("edged_uplink_live_ahead_records_total")
		if err == nil && (ahead == 0 || storedCount() == 0) {
			err = fmt.Errorf("live ahead %v, stored %d", ahead, storedCount())
		}
		return err
	})
	amq.Start()
	waitMore("the broker started", 300)
	if h := health(); h.Broker == nil || !h.Broker.Up {
		t.Fatalf("broker not reported up: %+v", h.Broker)
	}

	// 2. broker restarted cleanly, then crashed, mid-stream
	amq.Stop()
	time.Sleep(time.Second)
	amq.Start()
	waitMore("a broker restart (SIGTERM)", 300)
	amq.Kill()
	time.Sleep(time.Second)
	amq.Start()
	waitMore("a broker crash (SIGKILL)", 300)

	// 3. edged killed while messages are in flight to the cloud
	s.edged.stop(t, syscall.SIGKILL)
	s.startEdged()
	waitMore("edged was killed", 300)

	// 4. a foreign message on our queue goes to the dead-letter queue
	if err := testsvc.StompSend(amq.Addr(), "/queue/edged.telemetry", "not a telemetry batch"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the foreign message is dead-lettered", func() error {
		v, err := s.metric("edged_bus_foreign_messages_total")
		if err != nil || v != 1 {
			return fmt.Errorf("edged_bus_foreign_messages_total = %v, %v", v, err)
		}
		return nil
	})
	waitMore("the foreign message", 200)

	// 5. Redis down: the pipeline does not notice; Redis back: the snapshot
	// is brought up to date
	rc := redis.NewClient(&redis.Options{Addr: rds.Addr()})
	defer rc.Close()
	ctx := context.Background()
	rds.Stop()
	waitMore("Redis stopped", 300)
	eventually(t, 15*time.Second, "edged counts cache write errors while Redis is down", func() error {
		if v, err := s.metric("edged_cache_redis_write_errors_total"); err != nil || v == 0 {
			return fmt.Errorf("edged_cache_redis_write_errors_total = %v, %v", v, err)
		}
		return nil
	})
	rds.Start()
	eventually(t, 20*time.Second, "Redis holds every measure point again", func() error {
		for i := range 10 {
			m, err := rc.HGetAll(ctx, fmt.Sprintf("edged:snapshot:dev-%02d", i)).Result()
			if err != nil {
				return err
			}
			if len(m) != len(wantConst) {
				return fmt.Errorf("dev-%02d has %d fields in Redis, want %d", i, len(m), len(wantConst))
			}
		}
		return nil
	})

	// 6. switch to the embedded defaults and back, each time with a backlog
	// waiting (the cloud away): the backlog moves with the switch
	s.ingestd.stop(t, syscall.SIGTERM)
	eventually(t, 20*time.Second, "a backlog on the broker while the cloud is away", func() error {
		if h := health(); h.Bus.Records < 300 {
			return fmt.Errorf("%d records queued", h.Bus.Records)
		}
		return nil
	})
	s.edged.stop(t, syscall.SIGTERM)
	conf("embedded", "memory")
	s.startEdged()
	eventually(t, 20*time.Second, "the broker's backlog in the embedded bus", func() error {
		if h := health(); h.Broker != nil || h.Bus.Records < 300 {
			return fmt.Errorf("broker %+v, %d records queued", h.Broker, h.Bus.Records)
		}
		return nil
	})
	if log := s.edged.log.String(); !strings.Contains(log, "backlog moved after a switch of bus kind") {
		t.Fatalf("edged did not report moving the backlog:\n%s", lastLines(log, 20))
	}
	time.Sleep(time.Second) // more records on the embedded bus
	s.edged.stop(t, syscall.SIGTERM)
	conf("activemq", "redis")
	s.startEdged()
	s.startIngestd()
	waitMore("two switches of bus kind", 300)

	// drain and count: every sequence number exactly once
	sim.stop(t, syscall.SIGTERM)
	var final backboneHealth
	eventually(t, 60*time.Second, "edged's queue drained", func() error {
		final = health()
		if final.Bus.Depth != 0 {
			return fmt.Errorf("queue depth %d (%d records)", final.Bus.Depth, final.Bus.Records)
		}
		return nil
	})
	eventually(t, 20*time.Second, "every sequence stored", func() error {
		seen, _, err := s.stored()
		if err != nil {
			return err
		}
		last := final.Bus.NextSeq - 1
		var missing []uint64
		for q := uint64(1); q <= last; q++ {
			if !seen[q] {
				missing = append(missing, q)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d sequence numbers missing, first %v", len(missing), last, missing[:min(len(missing), 10)])
		}
		if len(seen) != int(last) {
			return fmt.Errorf("ingest holds %d sequence numbers, edged assigned %d", len(seen), last)
		}
		return nil
	})
	_, doc, _ := s.stored()
	t.Logf("%d records stored exactly once through broker down/restart/crash, edged kill -9, Redis down and two switches of bus kind; %d duplicates discarded by the ingest", final.Bus.NextSeq-1, doc.Duplicates)
}
