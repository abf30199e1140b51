package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/ingest/pgstore"
	"github.com/edged/edged/ingest/storetest"
	"github.com/edged/edged/internal/testsvc"
	"github.com/edged/edged/telemetry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// server is one PostgreSQL for a test and its subtests; each store gets
// a database of its own as a schema (search_path in its DSN).
type server struct {
	pg *testsvc.Postgres
	n  atomic.Int64
}

func startServer(t testing.TB) *server {
	testsvc.Integration(t)
	return &server{pg: testsvc.StartPostgres(t)}
}

// freshDSN creates an empty schema and returns a DSN that uses it.
func (sv *server) freshDSN(t testing.TB) string {
	t.Helper()
	name := "t" + strconv.FormatInt(sv.n.Add(1), 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, sv.pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatal(err)
	}
	return sv.pg.DSN() + "&search_path=" + url.QueryEscape(name)
}

func open(t testing.TB, dsn string) *pgstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := pgstore.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestStore runs everything against one server: the conformance suite,
// durability across a crash of the server, an outage, and two workers.
func TestStore(t *testing.T) {
	sv := startServer(t)
	dsns := map[ingest.Store]string{}
	var mu sync.Mutex
	newStore := func(t *testing.T) ingest.Store {
		dsn := sv.freshDSN(t)
		s := open(t, dsn)
		mu.Lock()
		dsns[s] = dsn
		mu.Unlock()
		return s
	}
	t.Run("Conformance", func(t *testing.T) { storetest.Run(t, newStore) })
	t.Run("Durable", func(t *testing.T) {
		storetest.Durable(t, newStore, func(t *testing.T, s ingest.Store) ingest.Store {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// An immediate shutdown: what was acknowledged is in the WAL.
			sv.pg.Crash()
			sv.pg.Start()
			mu.Lock()
			defer mu.Unlock()
			return open(t, dsns[s])
		})
	})
	t.Run("Outage", func(t *testing.T) { testOutage(t, sv) })
	t.Run("TwoWorkers", func(t *testing.T) { testTwoWorkers(t, sv) })
	t.Run("Schema", func(t *testing.T) { testSchema(t, sv) })
	t.Run("SameAsBolt", func(t *testing.T) { testSameAsBolt(t, sv) })
	t.Run("ReplaceWithNewSeries", func(t *testing.T) { testReplaceWithNewSeries(t, sv) })
}

// testReplaceWithNewSeries posts readings already stored together with
// the first reading of a new measure point, with and without a gateway:
// the COPY fails, and the upsert that follows must find the new series
// (created after the savepoint of the gateway's statements).
func testReplaceWithNewSeries(t *testing.T, sv *server) {
	s := open(t, sv.freshDSN(t))
	ctx := context.Background()
	for _, c := range []struct {
		dk       string
		gw1, gw2 string
		seq      uint64
	}{{"edged", "g1", "g2", 7}, {"plain", "", "", 0}} {
		first := &ingest.Batch{Gateway: c.gw1, Epoch: 1, Items: []enos.Item{
			storetest.Item("pk", c.dk, 5, 1, c.seq, storetest.P("v", telemetry.Int(1)))}}
		again := &ingest.Batch{Gateway: c.gw2, Epoch: 1, Items: []enos.Item{
			storetest.Item("pk", c.dk, 5, 1, c.seq, storetest.P("v", telemetry.Int(2)), storetest.P("w", telemetry.Int(3)))}}
		for _, b := range []*ingest.Batch{first, again} {
			if res, err := s.Append(ctx, b); err != nil || res.Stored != 1 {
				t.Fatalf("%s: %+v %v", c.dk, res, err)
			}
		}
		l, err := s.Latest(ctx, "pk", c.dk)
		if err != nil || len(l) != 2 || l["v"].Value.I != 2 || l["w"].Value.I != 3 || l["v"].Seq != c.seq {
			t.Errorf("%s: latest %+v %v", c.dk, l, err)
		}
	}
}

func post(gw string, epoch uint64, seqs ...uint64) *ingest.Batch {
	b := &ingest.Batch{Gateway: gw, Epoch: epoch}
	for _, q := range seqs {
		b.Items = append(b.Items, storetest.Item("pk", "meter", int64(q), epoch, q,
			storetest.P("v", telemetry.Int(int64(q))), storetest.P("w", telemetry.Float(float64(q)/2))))
	}
	return b
}

// testOutage stops PostgreSQL under an open store: calls fail within
// their deadline, and work again once it is back, with the same store.
func testOutage(t *testing.T, sv *server) {
	s := open(t, sv.freshDSN(t))
	if _, err := s.Append(context.Background(), post("gw", 1, 1, 2)); err != nil {
		t.Fatal(err)
	}
	sv.pg.Stop()
	restarted := false
	defer func() {
		if !restarted {
			sv.pg.Start() // for the other subtests
		}
	}()
	for i, call := range []func(context.Context) error{
		func(ctx context.Context) error { _, err := s.Append(ctx, post("gw", 1, 3)); return err },
		func(ctx context.Context) error { _, err := s.Latest(ctx, "pk", "meter"); return err },
		s.Ping,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		err := call(ctx)
		cancel()
		if err == nil {
			t.Fatalf("call %d succeeded with PostgreSQL down", i)
		}
		if d := time.Since(start); d > 2500*time.Millisecond {
			t.Errorf("call %d took %s, past its 2 s deadline: %v", i, d, err)
		}
		t.Logf("down: call %d: %v", i, err)
	}
	sv.pg.Start()
	restarted = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := s.Append(ctx, post("gw", 1, 2, 3))
	if err != nil {
		t.Fatalf("Append after the restart: %v", err)
	}
	if res != (ingest.AppendResult{Stored: 1, Duplicates: 1, Points: 2}) {
		t.Errorf("after the restart: %+v", res)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after the restart: %v", err)
	}
	seqs, err := s.Sequences(ctx, "gw")
	if err != nil || fmt.Sprint(seqs.Epochs) != "[{1 3 [[1 3]]}]" {
		t.Errorf("Sequences: %+v %v", seqs, err)
	}
	// A restart between two calls: the pool's idle connections are dead
	// and the next call does not fail for it.
	if _, err := s.Latest(ctx, "pk", "meter"); err != nil {
		t.Fatal(err)
	}
	sv.pg.Stop()
	sv.pg.Start()
	if _, err := s.Append(ctx, post("gw", 1, 4)); err != nil {
		t.Errorf("Append right after a restart: %v", err)
	}
	if l, err := s.Latest(ctx, "pk", "meter"); err != nil || l["v"].Value.I != 4 {
		t.Errorf("Latest right after a restart: %v %v", l, err)
	}
}

// testTwoWorkers has two stores (two pools: two ingestd processes) append
// overlapping posts of one gateway concurrently, then checks that every
// sequence is stored once and the counts add up; and that the fence one
// worker raised holds for the other.
func testTwoWorkers(t *testing.T, sv *server) {
	dsn := sv.freshDSN(t)
	workers := []*pgstore.Store{open(t, dsn), open(t, dsn)}
	const (
		total   = 2000
		posts   = 60
		perPost = 100
	)
	var stored, dups, sent atomic.Int64
	var wg sync.WaitGroup
	for w, s := range workers {
		for g := range 4 {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), uint64(g)))
				for range posts {
					first := uint64(rng.IntN(total-perPost)) + 1
					var seqs []uint64
					for q := first; q < first+perPost; q++ {
						seqs = append(seqs, q)
					}
					rng.Shuffle(len(seqs), func(i, j int) { seqs[i], seqs[j] = seqs[j], seqs[i] })
					res, err := s.Append(context.Background(), post("gw", 1, seqs...))
					if err != nil {
						t.Error(err)
						return
					}
					stored.Add(int64(res.Stored))
					dups.Add(int64(res.Duplicates))
					sent.Add(int64(len(seqs)))
				}
			})
		}
	}
	wg.Wait()
	// then every sequence, from both, so that all are there
	all := make([]uint64, total)
	for i := range all {
		all[i] = uint64(i + 1)
	}
	for _, s := range workers {
		res, err := s.Append(context.Background(), post("gw", 1, all...))
		if err != nil {
			t.Fatal(err)
		}
		stored.Add(int64(res.Stored))
		dups.Add(int64(res.Duplicates))
		sent.Add(total)
	}
	if stored.Load() != total || stored.Load()+dups.Load() != sent.Load() {
		t.Errorf("stored %d (want %d), duplicates %d, sent %d", stored.Load(), total, dups.Load(), sent.Load())
	}
	seqs, err := workers[1].Sequences(context.Background(), "gw")
	if err != nil {
		t.Fatal(err)
	}
	if seqs.Total != total || seqs.Duplicates != uint64(dups.Load()) || fmt.Sprint(seqs.Epochs) != fmt.Sprintf("[{1 %d [[1 %d]]}]", total, total) {
		t.Errorf("Sequences: total %d duplicates %d (want %d) epochs %v", seqs.Total, seqs.Duplicates, dups.Load(), seqs.Epochs)
	}
	page, err := workers[0].Range(context.Background(), "pk", "meter", "v", 0, math.MaxInt64, "", total+1)
	if err != nil || len(page.Readings) != total {
		t.Errorf("Range: %d readings, want %d: %v", len(page.Readings), total, err)
	}
	// Worker 0 sees epoch 2; worker 1 is then fenced at epoch 1.
	if _, err := workers[0].Append(context.Background(), post("gw", 2, total+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := workers[1].Append(context.Background(), post("gw", 1, total+2)); !errors.Is(err, ingest.ErrFenced) {
		t.Errorf("epoch 1 on worker 1 after epoch 2 on worker 0: %v", err)
	}
}

// testSchema opens a store on an existing schema (a second ingestd, or a
// restart) and checks that the data stays.
func testSchema(t *testing.T, sv *server) {
	dsn := sv.freshDSN(t)
	// Two processes starting at once.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			s, err := pgstore.Open(context.Background(), dsn, nil)
			if err != nil {
				t.Error(err)
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	s := open(t, dsn)
	if _, err := s.Append(context.Background(), post("gw", 1, 1)); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dsn)
	if l, err := s2.Latest(context.Background(), "pk", "meter"); err != nil || l["w"].Value != telemetry.Float(0.5) {
		t.Errorf("latest from a second store: %+v %v", l, err)
	}
	if _, err := s2.Range(context.Background(), "pk", "meter", "v", 0, 10, "YWJj", 0); !errors.Is(err, ingest.ErrBadCursor) {
		t.Errorf("a foreign cursor: %v", err)
	}
}
