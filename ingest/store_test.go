package ingest_test

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/ingest/storetest"
	"github.com/edged/edged/telemetry"
)

func TestBoltStoreConformance(t *testing.T) {
	paths := map[ingest.Store]string{}
	open := func(t *testing.T, path string) ingest.Store {
		s, err := ingest.OpenBoltStore(path)
		if err != nil {
			t.Fatal(err)
		}
		paths[s] = path
		t.Cleanup(func() { s.Close() })
		return s
	}
	newStore := func(t *testing.T) ingest.Store { return open(t, filepath.Join(t.TempDir(), "ingest.db")) }
	storetest.Run(t, newStore)
	t.Run("Durable", func(t *testing.T) {
		storetest.Durable(t, newStore, func(t *testing.T, s ingest.Store) ingest.Store {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, paths[s])
		})
	})
}

func TestBoltStoreLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ingest.db")
	s, err := ingest.OpenBoltStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s2, err := ingest.OpenBoltStore(path); err == nil {
		s2.Close()
		t.Fatal("a second open of the same file succeeded")
	}
}

// benchBatch is a gateway's post: 500 records × 10 points, 50 devices.
func benchBatch(post int) *ingest.Batch {
	b := &ingest.Batch{Gateway: "gw-01", Epoch: 3, Items: make([]enos.Item, 500)}
	for i := range b.Items {
		seq := uint64(post*500 + i + 1)
		pts := make([]enos.MeasurePoint, 10)
		for j := range pts {
			pts[j] = enos.MeasurePoint{ID: "point" + strconv.Itoa(j), Value: telemetry.Float(230.1 + float64(j))}
		}
		b.Items[i] = enos.Item{ProductKey: "meterPK", DeviceKey: "meter-" + strconv.Itoa(i%50), Time: 1700000000000 + int64(seq)*100, Points: pts, Origin: &enos.Origin{Epoch: 3, Seq: seq}}
	}
	return b
}

// BenchmarkBoltAppend stores posts of 500 records × 10 points, each its
// own fsync'd transaction, into a growing store.
func BenchmarkBoltAppend(b *testing.B) {
	s, err := ingest.OpenBoltStore(filepath.Join(b.TempDir(), "ingest.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batches := make([]*ingest.Batch, 64)
	for i := range batches {
		batches[i] = benchBatch(i)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		bt := batches[n%len(batches)]
		if n >= len(batches) { // new sequences, same shape
			for i := range bt.Items {
				bt.Items[i].Origin.Seq += uint64(len(batches) * 500)
				bt.Items[i].Time += int64(len(batches)) * 500 * 100
			}
		}
		res, err := s.Append(context.Background(), bt)
		if err != nil || res.Points != 5000 {
			b.Fatal(res, err)
		}
		n++
	}
	b.ReportMetric(float64(n)*5000/b.Elapsed().Seconds(), "points/s")
}
