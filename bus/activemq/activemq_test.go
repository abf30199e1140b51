package activemq_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/activemq"
	"github.com/edged/edged/bus/bustest"
	"github.com/edged/edged/certs"
	"github.com/edged/edged/internal/testsvc"
)

var prefixes atomic.Int64

// uniquePrefix gives every subtest its own queues on the shared broker.
func uniquePrefix(t *testing.T) string {
	return fmt.Sprintf("t%d.%d.", time.Now().UnixNano(), prefixes.Add(1))
}

func opener(t *testing.T, addr string, tune func(*activemq.Options)) bustest.Opener {
	dir := t.TempDir()
	prefix := uniquePrefix(t)
	return func(t *testing.T, maxBytes int64) bus.Bus {
		o := activemq.Options{Addr: addr, DataDir: dir, Prefix: prefix, MaxBytes: maxBytes, HeartBeat: time.Second}
		if os.Getenv("EDGED_TEST_LOG") != "" {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		if tune != nil {
			tune(&o)
		}
		b, err := activemq.Open(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// TestConformance runs the bus conformance suite against a real ActiveMQ.
func TestConformance(t *testing.T) {
	testsvc.Integration(t)
	amq := testsvc.StartActiveMQ(t, nil)
	bustest.Run(t, func(t *testing.T) bustest.Opener { return opener(t, amq.Addr(), nil) })
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestBrokerDownAtStart: Open works without the broker, Publish spills to
// the outbox, LinkState says down; when the broker comes up everything is
// delivered in order.
func TestBrokerDownAtStart(t *testing.T) {
	testsvc.Integration(t)
	amq := testsvc.StartActiveMQ(t, nil)
	amq.Stop()
	b := opener(t, amq.Addr(), nil)(t, 1<<20)
	ctx := ctxT(t, 60*time.Second)
	var seqs []uint64
	for i := range 20 {
		s, err := b.Publish(ctx, bus.Telemetry, 2, []byte(fmt.Sprint("m", i)))
		if err != nil {
			t.Fatalf("publish %d with the broker down: %v", i, err)
		}
		seqs = append(seqs, s)
	}
	time.Sleep(300 * time.Millisecond)
	if ls := b.(bus.Linked).LinkState(); ls.Up || ls.Error == "" {
		t.Fatalf("link state with the broker down = %+v", ls)
	}
	if st, _ := b.Stats(bus.Telemetry); st.Depth != 20 || st.Records != 40 {
		t.Fatalf("stats with the broker down = %+v, want 20 messages, 40 records", st)
	}
	amq.Start()
	ch, err := b.Consume(ctx, bus.Telemetry)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range seqs {
		select {
		case d := <-ch:
			if m := d.Message(); m.Seq != want || string(m.Body) != fmt.Sprint("m", i) || m.Count != 2 {
				t.Fatalf("delivery %d = seq %d %q, want %d", i, m.Seq, m.Body, want)
			}
			d.Ack()
		case <-ctx.Done():
			t.Fatalf("delivery %d did not arrive after the broker started", i)
		}
	}
	if ls := b.(bus.Linked).LinkState(); !ls.Up {
		t.Fatalf("link state after the broker started = %+v", ls)
	}
}

// TestBrokerRestartMidStream: the broker is stopped (SIGTERM) and killed
// (SIGKILL) while a producer publishes and a consumer acks; every sequence
// number arrives, in order apart from redeliveries of unacked messages, and
// none is missing.
func TestBrokerRestartMidStream(t *testing.T) {
	testsvc.Integration(t)
	for _, how := range []string{"sigterm", "sigkill"} {
		t.Run(how, func(t *testing.T) {
			amq := testsvc.StartActiveMQ(t, nil)
			b := opener(t, amq.Addr(), nil)(t, 64<<20)
			ctx := ctxT(t, 120*time.Second)
			ch, err := b.Consume(ctx, bus.Telemetry)
			if err != nil {
				t.Fatal(err)
			}
			const n = 400
			pubDone := make(chan error, 1)
			go func() {
				for i := range n {
					if _, err := b.Publish(ctx, bus.Telemetry, 1, []byte(fmt.Sprint(i))); err != nil {
						pubDone <- err
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
				pubDone <- nil
			}()
			seen := map[uint64]int{}
			var last uint64
			restarted := false
			for len(seen) < n {
				select {
				case d := <-ch:
					m := d.Message()
					seen[m.Seq]++
					if m.Seq < last && seen[m.Seq] == 1 {
						t.Fatalf("new seq %d after %d: reordered", m.Seq, last)
					}
					last = max(last, m.Seq)
					d.Ack()
					if len(seen) == n/3 && !restarted {
						restarted = true
						if how == "sigterm" {
							amq.Stop()
						} else {
							amq.Kill()
						}
						time.Sleep(time.Second)
						amq.Start()
					}
				case err := <-pubDone:
					if err != nil {
						t.Fatalf("publish: %v", err)
					}
					pubDone = nil
				case <-ctx.Done():
					t.Fatalf("only %d of %d sequences arrived", len(seen), n)
				}
			}
			for s := uint64(1); s <= n; s++ {
				if seen[s] == 0 {
					t.Fatalf("seq %d never arrived", s)
				}
			}
		})
	}
}

// TestForeignMessageIsDeadLettered: a message without edged headers on our
// queue goes to the dead-letter queue, counted; the consumer goes on.
func TestForeignMessageIsDeadLettered(t *testing.T) {
	testsvc.Integration(t)
	amq := testsvc.StartActiveMQ(t, nil)
	prefix := uniquePrefix(t)
	b, err := activemq.Open(activemq.Options{Addr: amq.Addr(), DataDir: t.TempDir(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := ctxT(t, 30*time.Second)
	if err := testsvc.StompSend(amq.Addr(), "/queue/"+prefix+bus.Telemetry, "hello from someone else"); err != nil {
		t.Fatal(err)
	}
	s, err := b.Publish(ctx, bus.Telemetry, 1, []byte("ours"))
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := b.Consume(ctx, bus.Telemetry)
	select {
	case d := <-ch:
		if d.Message().Seq != s || string(d.Message().Body) != "ours" {
			t.Fatalf("got %d %q, want our message", d.Message().Seq, d.Message().Body)
		}
		d.Ack()
	case <-ctx.Done():
		t.Fatal("our message did not arrive after the foreign one")
	}
	dl, _ := b.Consume(ctx, bus.DeadLetter)
	select {
	case d := <-dl:
		if !strings.Contains(string(d.Message().Body), "someone else") {
			t.Fatalf("dead letter = %q", d.Message().Body)
		}
		d.Ack()
	case <-ctx.Done():
		t.Fatal("the foreign message is not on the dead-letter queue")
	}
}

// TestTLSClientCertificate: stomp+ssl with needClientAuth=true. With the
// gateway's certificate the bus works; without one, or with one from a
// foreign CA, the broker refuses it and LinkState says why.
func TestTLSClientCertificate(t *testing.T) {
	testsvc.Integration(t)
	dir := t.TempDir()
	pki, err := certs.MakeDev(filepath.Join(dir, "pki"), certs.DevOptions{GatewayCN: "gw"})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := certs.MakeDev(filepath.Join(dir, "foreign"), certs.DevOptions{GatewayCN: "intruder"})
	if err != nil {
		t.Fatal(err)
	}
	amq := testsvc.StartActiveMQ(t, &testsvc.BrokerTLS{CA: pki.CACert, Cert: pki.ServerCert, Key: pki.ServerKey})

	good, _, err := certs.ClientConfig(pki.CACert, pki.ClientCert, pki.ClientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	b := opener(t, amq.TLSAddr(), func(o *activemq.Options) { o.TLS = good })(t, 1<<20)
	ctx := ctxT(t, 30*time.Second)
	seq, err := b.Publish(ctx, bus.Telemetry, 1, []byte("over tls"))
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := b.Consume(ctx, bus.Telemetry)
	select {
	case d := <-ch:
		if d.Message().Seq != seq {
			t.Fatalf("got seq %d, want %d", d.Message().Seq, seq)
		}
		d.Ack()
	case <-ctx.Done():
		t.Fatalf("nothing delivered over stomp+ssl: %+v", b.(bus.Linked).LinkState())
	}

	noCert, _, _ := certs.ClientConfig(pki.CACert, "", "", "")
	wrongCA, _, _ := certs.ClientConfig(pki.CACert, foreign.ClientCert, foreign.ClientKey, "")
	for name, cfg := range map[string]*tls.Config{"no client certificate": noCert, "certificate of a foreign CA": wrongCA} {
		t.Run(name, func(t *testing.T) {
			b := opener(t, amq.TLSAddr(), func(o *activemq.Options) { o.TLS = cfg })(t, 1<<20)
			if _, err := b.Publish(ctx, bus.Telemetry, 1, []byte("x")); err != nil {
				t.Fatal(err) // the outbox takes it
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				ls := b.(bus.Linked).LinkState()
				if !ls.Up && ls.Error != "" && ls.Error != "not connected yet" {
					t.Logf("refused as expected: %s", ls.Error)
					break
				}
				if ls.Up || time.Now().After(deadline) {
					t.Fatalf("link state = %+v, want refused", ls)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if st, _ := b.Stats(bus.Telemetry); st.Depth != 1 {
				t.Fatalf("the refused message is not kept in the outbox: %+v", st)
			}
		})
	}
}
