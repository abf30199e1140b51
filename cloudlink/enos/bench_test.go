package enos

import (
	"strconv"
	"testing"

	"github.com/edged/edged/telemetry"
)

// benchRecords is a gateway's typical batch: n records of 10 points.
func benchRecords(n int) []telemetry.Record {
	recs := make([]telemetry.Record, n)
	for i := range recs {
		pts := make([]telemetry.Point, 10)
		for j := range pts {
			pts[j] = telemetry.Point{ID: "point" + strconv.Itoa(j), Value: telemetry.Float(230.1 + float64(i*j)/7)}
		}
		pts[3].Value = telemetry.Int(int64(i))
		pts[4].Value = telemetry.Bool(i%2 == 0)
		pts[5] = telemetry.Point{ID: "point5", Quality: telemetry.Bad, Reason: "timeout"}
		recs[i] = telemetry.Record{Gateway: "gw-01", Epoch: 3, Seq: uint64(1000 + i), ProductKey: "meterPK", DeviceKey: "meter-" + strconv.Itoa(i%50), Time: 1700000000000 + int64(i), Points: pts}
	}
	return recs
}

// BenchmarkAppendPostBatch encodes 500 records × 10 points per op.
func BenchmarkAppendPostBatch(b *testing.B) {
	recs := benchRecords(500)
	buf := AppendPostBatch(nil, 1, "gw-01", 3, recs)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendPostBatch(buf[:0], 1, "gw-01", 3, recs)
	}
	b.ReportMetric(float64(b.N)*5000/b.Elapsed().Seconds(), "points/s")
}

// BenchmarkParsePostBatch parses the same batch (the ingest side).
func BenchmarkParsePostBatch(b *testing.B) {
	buf := AppendPostBatch(nil, 1, "gw-01", 3, benchRecords(500))
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePostBatch(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*5000/b.Elapsed().Seconds(), "points/s")
}
