package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/ingest"
	"github.com/edged/edged/telemetry"
)

// testSameAsBolt applies the same random operations to the embedded store
// and to a PostgreSQL store and compares every answer. Times are chosen so
// that two records of different origins never share (device, time, seq):
// there the embedded store replaces the whole record, this store the
// readings posted (see the package documentation).
func testSameAsBolt(t *testing.T, sv *server) {
	ctx := context.Background()
	bolt, err := ingest.OpenBoltStore(filepath.Join(t.TempDir(), "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	pg := open(t, sv.freshDSN(t))
	stores := []ingest.Store{bolt, pg}
	rng := rand.New(rand.NewPCG(1, 2))
	value := func() telemetry.Value {
		switch rng.IntN(6) {
		case 0:
			return telemetry.Bool(rng.IntN(2) == 1)
		case 1:
			return telemetry.Int(rng.Int64() - math.MaxInt64/2)
		case 2:
			return telemetry.Uint(rng.Uint64())
		case 3:
			return telemetry.Float(rng.NormFloat64() * 1e6)
		case 4:
			return telemetry.String("s\x01é" + strconv.Itoa(rng.IntN(100)))
		}
		return telemetry.Value{}
	}
	point := func() enos.MeasurePoint {
		mp := enos.MeasurePoint{Quality: rng.IntN(4) - 1}
		if rng.IntN(5) == 0 {
			mp.Array = []telemetry.Value{}
			for range rng.IntN(3) {
				mp.Array = append(mp.Array, value())
			}
		} else {
			mp.Value = value()
		}
		if rng.IntN(3) == 0 {
			mp.Reason = "r\x00" + strconv.Itoa(rng.IntN(3))
		}
		return mp
	}
	epochs := map[string]uint64{"g1": 1, "g2": 1}
	for op := range 400 {
		b := &ingest.Batch{}
		gw := []string{"", "g1", "g2"}[rng.IntN(3)]
		if gw != "" {
			b.Gateway = gw
			if rng.IntN(10) == 0 {
				epochs[gw]++
			}
			b.Epoch = epochs[gw]
			if rng.IntN(15) == 0 {
				b.Epoch-- // fenced once a newer one was seen
			}
		}
		for range 1 + rng.IntN(6) {
			it := enos.Item{ProductKey: "pk", DeviceKey: "d" + strconv.Itoa(rng.IntN(3))}
			// one reading of a point per item: with two, the embedded
			// store's Range gives the first and its Latest the last
			for _, k := range rng.Perm(4)[:1+rng.IntN(4)] {
				mp := point()
				mp.ID = "p" + strconv.Itoa(k)
				it.Points = append(it.Points, mp)
			}
			if gw != "" && rng.IntN(4) > 0 {
				oe, seq := uint64(1+rng.IntN(2)), uint64(rng.IntN(30))
				it.Origin = &enos.Origin{Epoch: oe, Seq: seq}
				it.Time = int64(seq*100+oe*10) + int64(gw[1]-'0')
			} else {
				it.Time = int64(rng.IntN(40)) * 100 // seq 0: multiples of 100
			}
			b.Items = append(b.Items, it)
		}
		var res [2]ingest.AppendResult
		var errs [2]error
		for i, s := range stores {
			res[i], errs[i] = s.Append(ctx, b)
		}
		if res[0] != res[1] || (errs[0] == nil) != (errs[1] == nil) || errors.Is(errs[0], ingest.ErrFenced) != errors.Is(errs[1], ingest.ErrFenced) {
			t.Fatalf("op %d: Append: bolt %+v %v, pg %+v %v", op, res[0], errs[0], res[1], errs[1])
		}
		if rng.IntN(4) == 0 {
			e := ingest.Event{ProductKey: "pk", DeviceKey: "d" + strconv.Itoa(rng.IntN(2)), Name: "ev" + strconv.Itoa(rng.IntN(2)),
				Time: int64(rng.IntN(5)), ID: strconv.Itoa(rng.IntN(3)), Values: json.RawMessage(fmt.Sprintf(`{ "op" : %d, "s": "\u0000é" }`, op))}
			for _, s := range stores {
				if err := s.AppendEvent(ctx, e); err != nil {
					t.Fatal(err)
				}
			}
		}
		if rng.IntN(4) == 0 {
			attrs := map[string]json.RawMessage{"a" + strconv.Itoa(rng.IntN(3)): json.RawMessage(fmt.Sprintf(` [ %d , "x" ] `, op))}
			for _, s := range stores {
				if err := s.SetAttributes(ctx, "pk", "d0", attrs, int64(op)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	same := func(what string, f func(s ingest.Store) (any, error)) {
		t.Helper()
		a, errA := f(bolt)
		b, errB := f(pg)
		if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
			t.Errorf("%s:\nbolt %+v %v\npg   %+v %v", what, a, errA, b, errB)
		}
	}
	for _, gw := range []string{"g1", "g2"} {
		same("Sequences "+gw, func(s ingest.Store) (any, error) { return s.Sequences(ctx, gw) })
	}
	for d := range 3 {
		dk := "d" + strconv.Itoa(d)
		same("Latest "+dk, func(s ingest.Store) (any, error) { return s.Latest(ctx, "pk", dk) })
		same("Attributes "+dk, func(s ingest.Store) (any, error) { return s.Attributes(ctx, "pk", dk) })
		same("Events "+dk, func(s ingest.Store) (any, error) {
			var all []ingest.Event
			cursor := ""
			for {
				page, err := s.Events(ctx, "pk", dk, 0, math.MaxInt64, cursor, 3)
				if err != nil {
					return nil, err
				}
				all = append(all, page.Events...)
				if cursor = page.Next; cursor == "" {
					return all, nil
				}
			}
		})
		for p := range 4 {
			id := "p" + strconv.Itoa(p)
			same("Range "+dk+" "+id, func(s ingest.Store) (any, error) {
				var all []ingest.Reading
				cursor := ""
				for {
					page, err := s.Range(ctx, "pk", dk, id, 100, 3000, cursor, 7)
					if err != nil {
						return nil, err
					}
					all = append(all, page.Readings...)
					if cursor = page.Next; cursor == "" {
						return all, nil
					}
				}
			})
		}
	}
}
