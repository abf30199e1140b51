package embedded_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edged/edged/bus"
	"github.com/edged/edged/bus/bustest"
	"github.com/edged/edged/bus/embedded"
)

func TestMain(m *testing.M) {
	if os.Getenv("EDGED_BUS_CRASH_CHILD") != "" {
		crashChild(os.Getenv("EDGED_BUS_CRASH_CHILD"))
		return
	}
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bustest.Opener {
		dir := t.TempDir()
		return func(t *testing.T, maxBytes int64) bus.Bus {
			b, err := embedded.Open(dir, embedded.Options{MaxBytes: maxBytes, AckFlush: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		}
	})
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	b, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := embedded.Open(dir, embedded.Options{}); err == nil {
		t.Fatal("a second Open of the same data dir succeeded")
	}
}

// crashChild publishes until killed, printing each sequence number once
// Publish has returned (i.e. once the message is durable).
func crashChild(dir string) {
	b, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		seq, err := b.Publish(context.Background(), bus.Telemetry, 3, []byte(strconv.Itoa(i)))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Fprintln(w, seq, i)
		w.Flush()
	}
}

// TestKill9LosesNothing kills a publishing process with SIGKILL and checks
// that every message it reported durable is there, and that sequence numbers
// continue without reuse and without a gap.
func TestKill9LosesNothing(t *testing.T) {
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "EDGED_BUS_CRASH_CHILD="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		var acked []uint64
		for sc.Scan() && len(acked) < 200 {
			var seq uint64
			var i int
			if _, err := fmt.Sscan(sc.Text(), &seq, &i); err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked = append(acked, seq)
		}
		cmd.Process.Kill() // SIGKILL mid-stream
		cmd.Wait()
		if len(acked) < 200 {
			t.Fatalf("round %d: child stopped after %d publishes", round, len(acked))
		}

		b, err := embedded.Open(dir, embedded.Options{})
		if err != nil {
			t.Fatal(err)
		}
		st, _ := b.Stats(bus.Telemetry)
		ctx, cancel := context.WithCancel(context.Background())
		ch, _ := b.Consume(ctx, bus.Telemetry)
		stored := map[uint64]bool{}
		var prevEnd uint64
		for stored[acked[len(acked)-1]] == false {
			select {
			case d := <-ch:
				m := d.Message()
				if prevEnd != 0 && m.Seq != prevEnd {
					t.Fatalf("round %d: gap or reuse: message at %d after one ending at %d", round, m.Seq, prevEnd)
				}
				prevEnd = m.Seq + uint64(m.Count)
				stored[m.Seq] = true
				if err := d.Ack(); err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: durable seq %d missing after kill -9 (stats %+v)", round, acked[len(acked)-1], st)
			}
		}
		for _, s := range acked {
			if !stored[s] {
				t.Fatalf("round %d: durable seq %d lost", round, s)
			}
		}
		cancel()
		for range ch {
		}
		b.Close()
	}
}

func BenchmarkPublish(b *testing.B) {
	bb, err := embedded.Open(b.TempDir(), embedded.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	body := make([]byte, 16<<10)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := bb.Publish(context.Background(), bus.Telemetry, 100, body); err != nil {
			b.Fatal(err)
		}
	}
}
