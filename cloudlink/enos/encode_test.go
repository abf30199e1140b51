package enos

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/edged/edged/telemetry"
)

// TestAppendPostBatchGolden checks the exact bytes of the documented example.
func TestAppendPostBatchGolden(t *testing.T) {
	recs := []telemetry.Record{{
		Gateway: "gw-01", Epoch: 1, Seq: 1234, ProductKey: "meterPK", DeviceKey: "meter-1", Time: 1700000000000,
		Points: []telemetry.Point{
			{ID: "voltage", Value: telemetry.Float(230.1)},
			{ID: "breaker", Value: telemetry.Bool(true)},
			{ID: "current", Quality: telemetry.Bad, Reason: "timeout"},
		},
	}}
	const want = `{"id":"17","version":"1.0","method":"thing.measurepoint.post.batch","params":[{"productKey":"meterPK","deviceKey":"meter-1","measurepoints":{"voltage":230.1,"breaker":true,"current":{"value":null,"quality":1,"reason":"timeout"}},"time":1700000000000,"edged":{"epoch":1,"seq":1234}}],"allowOfflineSubDevice":true,"edged":{"gateway":"gw-01","epoch":3}}`
	if got := string(AppendPostBatch(nil, 17, "gw-01", 3, recs)); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	resume := string(AppendResumeBatch(nil, 17, "gw-01", 3, recs))
	if resume != strings.Replace(want, MethodPostBatch, MethodResumeBatch, 1) {
		t.Errorf("resume: %s", resume)
	}
}

func TestAppendValue(t *testing.T) {
	for _, tt := range []struct {
		v    telemetry.Value
		want string
	}{
		{telemetry.Value{}, "null"},
		{telemetry.Bool(false), "false"},
		{telemetry.Int(-42), "-42"},
		{telemetry.Uint(math.MaxUint64), "18446744073709551615"},
		{telemetry.Float(230), "230.0"},
		{telemetry.Float(-0.0), "0.0"},
		{telemetry.Float(math.Copysign(0, -1)), "-0.0"},
		{telemetry.Float(0.1), "0.1"},
		{telemetry.Float(1e21), "1e+21"},
		{telemetry.Float(1.5e-7), "1.5e-07"},
		{telemetry.Float(math.NaN()), "null"},
		{telemetry.Float(math.Inf(1)), "null"},
		{telemetry.String("a\"b\\c\n\t\x01\u2028é"), `"a\"b\\c\n\t\u0001\u2028é"`},
		{telemetry.String("bad\xffutf8"), `"bad\ufffdutf8"`},
	} {
		if got := string(AppendValue(nil, tt.v)); got != tt.want {
			t.Errorf("%v: got %s, want %s", tt.v, got, tt.want)
		}
	}
}

// TestRoundTrip is a property test: random records, encoded then parsed,
// come back equal (JSON has one number type, so a Uint that fits int64
// comes back as an Int; a non-finite float comes back as a bad point), and
// encoding/json agrees the payload is valid and decodes the strings the same.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var buf []byte
	for round := range 500 {
		recs := randomRecords(rng)
		gw := randomString(rng) + "g"
		buf = AppendPostBatch(buf[:0], uint64(round), gw, rng.Uint64(), recs)
		if !json.Valid(buf) {
			t.Fatalf("invalid JSON: %s", buf)
		}
		pb, err := ParsePostBatch(buf)
		if err != nil {
			t.Fatalf("%v\n%s", err, buf)
		}
		if pb.ID != strconv.Itoa(round) || pb.Sender.Gateway != fixUTF8(gw) || len(pb.Items) != len(recs) {
			t.Fatalf("envelope %+v", pb)
		}
		for i, r := range recs {
			it := pb.Items[i]
			if it.ProductKey != fixUTF8(r.ProductKey) || it.DeviceKey != fixUTF8(r.DeviceKey) || it.Time != r.Time || *it.Origin != (Origin{r.Epoch, r.Seq}) {
				t.Fatalf("item %d: %+v, want %+v", i, it, r)
			}
			if !pointsEqual(it.Points, expectPoints(r.Points)) {
				t.Fatalf("item %d points\n got %+v\nwant %+v\n%s", i, it.Points, r.Points, buf)
			}
		}
		// An independent decoder reads the same strings.
		var std struct {
			Params []struct {
				DeviceKey     string                     `json:"deviceKey"`
				Measurepoints map[string]json.RawMessage `json:"measurepoints"`
			} `json:"params"`
		}
		if err := json.Unmarshal(buf, &std); err != nil {
			t.Fatal(err)
		}
		for i, r := range recs {
			if utf8.ValidString(r.DeviceKey) && std.Params[i].DeviceKey != r.DeviceKey {
				t.Fatalf("encoding/json reads %q, want %q", std.Params[i].DeviceKey, r.DeviceKey)
			}
		}
		// Re-encoding the parsed batch is stable.
		again, err := ParsePostBatch(pb.AppendJSON(nil))
		if err != nil || string(again.AppendJSON(nil)) != string(pb.AppendJSON(nil)) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	}
}

// expectPoints is what a parse of the encoded points gives.
func expectPoints(ps []telemetry.Point) []MeasurePoint {
	out := make([]MeasurePoint, len(ps))
	for i, p := range ps {
		v := p.Value
		if v.Kind == telemetry.KindUint && v.U <= math.MaxInt64 {
			v = telemetry.Int(int64(v.U))
		}
		mp := MeasurePoint{ID: fixUTF8(p.ID), Value: v, Quality: int(p.Quality), Reason: fixUTF8(p.Reason)}
		if v.Kind == telemetry.KindString {
			mp.Value.S = fixUTF8(v.S)
		}
		switch {
		case v.Kind == telemetry.KindFloat && !finite(v.F):
			mp = MeasurePoint{ID: mp.ID, Quality: QualityBad, Reason: ReasonNaN}
		case p.Quality == telemetry.Bad:
			mp.Value = telemetry.Value{}
		}
		out[i] = mp
	}
	return out
}

func randomRecords(rng *rand.Rand) []telemetry.Record {
	recs := make([]telemetry.Record, rng.IntN(8))
	for i := range recs {
		r := telemetry.Record{Epoch: rng.Uint64N(10), Seq: rng.Uint64(), Time: rng.Int64N(1 << 50)}
		if rng.IntN(4) > 0 {
			r.ProductKey, r.DeviceKey = randomString(rng)+"p", randomString(rng)+"d"
		}
		for range rng.IntN(6) {
			p := telemetry.Point{ID: randomString(rng) + "x", Value: randomValue(rng), Quality: telemetry.Quality(rng.IntN(3))}
			switch p.Quality {
			case telemetry.Bad:
				p.Value = telemetry.Value{}
				p.Reason = randomString(rng)
			case telemetry.Stale:
				if rng.IntN(2) == 0 {
					p.Reason = randomString(rng)
				}
			}
			r.Points = append(r.Points, p)
		}
		recs[i] = r
	}
	return recs
}

func randomValue(rng *rand.Rand) telemetry.Value {
	switch rng.IntN(9) {
	case 0:
		return telemetry.Bool(rng.IntN(2) == 0)
	case 1:
		return telemetry.Int(int64(rng.Uint64()))
	case 2:
		return telemetry.Uint(rng.Uint64())
	case 3:
		return telemetry.Float(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(40)-20)))
	case 4:
		return telemetry.Float(float64(rng.IntN(1000)))
	case 5:
		return telemetry.Float([]float64{math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64, math.SmallestNonzeroFloat64}[rng.IntN(5)])
	case 6:
		return telemetry.String(randomString(rng))
	case 7:
		return telemetry.Float(math.Float64frombits(rng.Uint64()))
	}
	return telemetry.Int(rng.Int64N(100) - 50)
}

func randomString(rng *rand.Rand) string {
	const alphabet = "abcXYZ09-_. \"\\/\n\t\x00\x1f\x7fé€😀\u2028"
	var b strings.Builder
	for range rng.IntN(8) {
		if rng.IntN(20) == 0 {
			b.WriteByte(byte(0x80 + rng.IntN(0x80))) // invalid UTF-8
			continue
		}
		r := []rune(alphabet)
		b.WriteRune(r[rng.IntN(len(r))])
	}
	return b.String()
}

// fixUTF8 replaces every invalid byte by U+FFFD, as JSON encoders do (and
// unlike strings.ToValidUTF8, which replaces runs).
func fixUTF8(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
