package telemetry

import (
	"errors"
	"math"
	"reflect"
	"testing"
)

func sampleRecords() []Record {
	return []Record{
		{Device: "meter-1", ProductKey: "meterPK", DeviceKey: "meter-1", Time: 1700000000123, Points: []Point{
			{ID: "voltage", Value: Float(230.25)},
			{ID: "energy", Value: Uint(math.MaxUint64)},
			{ID: "temp", Value: Int(-405)},
			{ID: "breaker", Value: Bool(true)},
			{ID: "name", Value: String("PV inverter \"7\" ✓")},
			{ID: "current", Quality: Bad, Reason: "timeout"},
			{ID: "freq", Value: Float(49.98), Quality: Stale},
		}},
		{Device: "d2", ProductKey: "p", DeviceKey: "k", Time: -5, Points: nil},
		{Device: "", Time: 0, Points: []Point{{ID: "nan", Value: Float(math.Inf(-1))}}},
	}
}

func TestBatchRoundTrip(t *testing.T) {
	in := sampleRecords()
	b := AppendBatch(nil, "gw-01", 7, in)
	out, err := DecodeBatch(b, 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i].Gateway, in[i].Epoch, in[i].Seq = "gw-01", 7, uint64(100+i)
		if in[i].Points == nil {
			in[i].Points = []Point{}
		}
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in  %+v\n out %+v", in, out)
	}
}

func TestDecodeRejectsCorruption(t *testing.T) {
	good := AppendBatch(nil, "gw", 1, sampleRecords())
	cases := map[string][]byte{
		"empty":         {},
		"version":       append([]byte{9}, good[1:]...),
		"truncated":     good[:len(good)-3],
		"trailing":      append(append([]byte{}, good...), 0),
		"huge count":    {1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad kind":      AppendBatch(nil, "g", 1, []Record{{Points: []Point{{ID: "x", Value: Value{Kind: 42}}}}}),
		"bad quality":   AppendBatch(nil, "g", 1, []Record{{Points: []Point{{ID: "x", Quality: 7}}}}),
		"string length": {1, 0xff, 0xff, 0x03},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeBatch(b, 1); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add(AppendBatch(nil, "gw", 1, sampleRecords()))
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := DecodeBatch(b, 1)
		if err != nil {
			return
		}
		// whatever decodes survives a re-encoding unchanged (the bytes may
		// differ: a varint can be written non-canonically)
		gw, ep := "", uint64(0)
		if len(recs) > 0 {
			gw, ep = recs[0].Gateway, recs[0].Epoch
		}
		again, err := DecodeBatch(AppendBatch(nil, gw, ep, recs), 1)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if len(again) != len(recs) {
			t.Fatalf("re-encoding changed the record count %d -> %d", len(recs), len(again))
		}
		for i := range recs {
			if len(again[i].Points) != len(recs[i].Points) || again[i].Device != recs[i].Device || again[i].Time != recs[i].Time {
				t.Fatalf("record %d changed: %+v -> %+v", i, recs[i], again[i])
			}
			for j, p := range recs[i].Points {
				q := again[i].Points[j]
				if p.ID != q.ID || p.Quality != q.Quality || p.Reason != q.Reason || !p.Value.Equal(q.Value) {
					t.Fatalf("record %d point %d changed: %+v -> %+v", i, j, p, q)
				}
			}
		}
	})
}

func BenchmarkAppendBatch(b *testing.B) {
	recs := make([]Record, 500)
	for i := range recs {
		recs[i] = sampleRecords()[0]
	}
	var buf []byte
	for b.Loop() {
		buf = AppendBatch(buf[:0], "gw-01", 1, recs)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeBatch(b *testing.B) {
	recs := make([]Record, 500)
	for i := range recs {
		recs[i] = sampleRecords()[0]
	}
	buf := AppendBatch(nil, "gw-01", 1, recs)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := DecodeBatch(buf, 1); err != nil {
			b.Fatal(err)
		}
	}
}
