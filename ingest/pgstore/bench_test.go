package pgstore_test

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/telemetry"
)

// The benchmark posts are what edged sends: 100 records of 50 measure
// points, 10 devices, each record with its origin epoch and sequence.
const (
	benchItems  = 100
	benchPoints = 50
	benchPerOp  = benchItems * benchPoints
)

// benchPost returns post number n (from 0): new sequences and times.
func benchPost(n int) *ingest.Batch {
	b := &ingest.Batch{Gateway: "gw-01", Epoch: 3, Items: make([]enos.Item, benchItems)}
	for i := range b.Items {
		seq := uint64(n*benchItems + i + 1)
		pts := make([]enos.MeasurePoint, benchPoints)
		for j := range pts {
			pts[j] = enos.MeasurePoint{ID: "point" + strconv.Itoa(j), Value: telemetry.Float(230.1 + float64(j) + float64(seq))}
		}
		b.Items[i] = enos.Item{ProductKey: "meterPK", DeviceKey: "meter-" + strconv.Itoa(i%10),
			Time: 1700000000000 + int64(seq)*100, Points: pts, Origin: &enos.Origin{Epoch: 3, Seq: seq}}
	}
	return b
}

func reportPoints(b *testing.B, n int) {
	b.ReportMetric(float64(n)*benchPerOp/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkAppend appends posts to a PostgreSQL store (one durable
// transaction each) on a private server with fsync on.
func BenchmarkAppend(b *testing.B) {
	sv := startServer(b)
	s := open(b, sv.freshDSN(b))
	ctx := context.Background()
	if _, err := s.Append(ctx, benchPost(0)); err != nil { // the series exist
		b.Fatal(err)
	}
	n := 1
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.Append(ctx, benchPost(n))
		if err != nil || res.Points != benchPerOp {
			b.Fatal(res, err)
		}
		n++
	}
	reportPoints(b, n-1)
}

// BenchmarkCopyBaseline copies the rows that BenchmarkAppend's posts
// become into a table without any key or index: what PostgreSQL itself
// can take on this machine, one durable commit per post.
func BenchmarkCopyBaseline(b *testing.B) {
	sv := startServer(b)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, sv.freshDSN(b))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `CREATE TABLE plain (series bigint, time bigint, seq bigint,
		quality bigint, reason bytea, value bytea)`); err != nil {
		b.Fatal(err)
	}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		rows := copyRows(benchPost(n))
		if k, err := c.CopyFrom(ctx, pgx.Identifier{"plain"}, copyColumns, pgx.CopyFromRows(rows)); err != nil || k != benchPerOp {
			b.Fatal(k, err)
		}
		n++
	}
	reportPoints(b, n)
}

var copyColumns = []string{"series", "time", "seq", "quality", "reason", "value"}

// copyRows are the rows of a post for the COPY baselines, in the post's
// order: a row per measure point, series numbered per (device, point).
func copyRows(post *ingest.Batch) [][]any {
	rows := make([][]any, 0, benchPerOp)
	for i, it := range post.Items {
		for j, mp := range it.Points {
			v := binary.BigEndian.AppendUint64([]byte{byte(telemetry.KindFloat)}, math.Float64bits(mp.Value.F)) // as the store encodes it
			rows = append(rows, []any{int64(i%10*benchPoints + j), it.Time, int64(it.Origin.Seq), int64(0), []byte{}, v})
		}
	}
	return rows
}

// BenchmarkCopyBaselineIndexed is BenchmarkCopyBaseline into a table
// defined as the store's readings table (its primary key included), made
// by the store's own schema: what PostgreSQL can take with the index that
// Append maintains, one durable commit per post.
func BenchmarkCopyBaselineIndexed(b *testing.B) {
	sv := startServer(b)
	ctx := context.Background()
	dsn := sv.freshDSN(b)
	open(b, dsn).Close() // the schema
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `CREATE TABLE indexed (LIKE readings INCLUDING ALL)`); err != nil {
		b.Fatal(err)
	}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		rows := copyRows(benchPost(n))
		if k, err := c.CopyFrom(ctx, pgx.Identifier{"indexed"}, copyColumns, pgx.CopyFromRows(rows)); err != nil || k != benchPerOp {
			b.Fatal(k, err)
		}
		n++
	}
	reportPoints(b, n)
}

// BenchmarkBoltAppend appends the same posts to the embedded store.
func BenchmarkBoltAppend(b *testing.B) {
	s, err := ingest.OpenBoltStore(filepath.Join(b.TempDir(), "ingest.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.Append(ctx, benchPost(n))
		if err != nil || res.Points != benchPerOp {
			b.Fatal(res, err)
		}
		n++
	}
	reportPoints(b, n)
}
