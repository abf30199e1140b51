package redis

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/edged/edged/cache"
	"github.com/edged/edged/cache/cachetest"
	"github.com/edged/edged/internal/testsvc"
	"github.com/edged/edged/telemetry"
)

// ---- field encoding (no Redis) ----

func TestFieldEncoding(t *testing.T) {
	const ms = 1700000000000
	good := func(v telemetry.Value) cache.Entry {
		return cache.Entry{Value: v, Quality: telemetry.Good, Time: ms, Seq: 12}
	}
	for _, tc := range []struct {
		e    cache.Entry
		want string
	}{
		{good(telemetry.Float(230.1)), `{"v":230.1,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(2)), `{"v":2.0,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(-0.5)), `{"v":-0.5,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(math.Copysign(0, -1))), `{"v":-0.0,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(1e21)), `{"v":1e+21,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(1e-7)), `{"v":1e-7,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(123456789012345680000)), `{"v":123456789012345680000.0,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(float64(float32(0.1)))), `{"v":0.10000000149011612,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(math.NaN())), `{"v":"NaN","k":"float","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(math.Inf(1))), `{"v":"+Inf","k":"float","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Float(math.Inf(-1))), `{"v":"-Inf","k":"float","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Int(1<<53 + 1)), `{"v":9007199254740993,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Int(math.MinInt64)), `{"v":-9223372036854775808,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Uint(math.MaxUint64)), `{"v":18446744073709551615,"k":"uint","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Uint(7)), `{"v":7,"k":"uint","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Bool(true)), `{"v":true,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.Bool(false)), `{"v":false,"q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.String("A-113")), `{"v":"A-113","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.String("say \"hi\"\\\n\t\x01é€")), `{"v":"say \"hi\"\\\n\t\u0001é€","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.String("bad\xffutf8")), `{"v":"bad\ufffdutf8","q":"good","t":1700000000000,"seq":12}`},
		{good(telemetry.String("")), `{"v":"","q":"good","t":1700000000000,"seq":12}`},
		{cache.Entry{Quality: telemetry.Bad, Reason: "timeout", Time: ms, Seq: 12}, `{"q":"bad","t":1700000000000,"seq":12,"r":"timeout"}`},
		{cache.Entry{Quality: telemetry.Bad, Reason: `exception 2 ("illegal data address")`, Time: -1}, `{"q":"bad","t":-1,"seq":0,"r":"exception 2 (\"illegal data address\")"}`},
		{cache.Entry{Value: telemetry.Float(1.5), Quality: telemetry.Stale, Time: ms, Seq: math.MaxUint64}, `{"v":1.5,"q":"stale","t":1700000000000,"seq":18446744073709551615}`},
	} {
		got := string(appendField(nil, tc.e))
		if got != tc.want {
			t.Errorf("encode %+v:\n got %s\nwant %s", tc.e, got, tc.want)
			continue
		}
		back, err := decodeField([]byte(got))
		if err != nil {
			t.Errorf("decode %s: %v", got, err)
			continue
		}
		want := tc.e
		if want.Value.Kind == telemetry.KindString {
			want.Value.S = strings.ToValidUTF8(want.Value.S, "\uFFFD")
		}
		if !sameEntry(back, want) {
			t.Errorf("decode %s = %+v, want %+v", got, back, want)
		}
	}
}

func TestFieldDecoding(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want cache.Entry // zero Time means: must fail
	}{
		// what other tools may write
		{`{"t":5,"q":"good","v":5}`, cache.Entry{Value: telemetry.Int(5), Time: 5}},
		{` { "v" : 1.25 , "q" : "stale" , "t" : 5 , "seq" : 3 , "x" : [1] } `, cache.Entry{Value: telemetry.Float(1.25), Quality: telemetry.Stale, Time: 5, Seq: 3}},
		{`{"v":1E3,"q":"good","t":5}`, cache.Entry{Value: telemetry.Float(1000), Time: 5}},
		{`{"v":9223372036854775808,"q":"good","t":5}`, cache.Entry{Value: telemetry.Uint(1 << 63), Time: 5}},
		{`{"v":18446744073709551616,"q":"good","t":5}`, cache.Entry{Value: telemetry.Float(1 << 64), Time: 5}},
		{`{"v":null,"q":"bad","t":5,"r":"x"}`, cache.Entry{Quality: telemetry.Bad, Reason: "x", Time: 5}},
		{`{"v":5,"k":"float","q":"good","t":5}`, cache.Entry{Value: telemetry.Float(5), Time: 5}},
		{`{"v":5,"k":"int","q":"good","t":5}`, cache.Entry{Value: telemetry.Int(5), Time: 5}},
		{`{"v":"Inf","k":"float","q":"good","t":5}`, cache.Entry{Value: telemetry.Float(math.Inf(1)), Time: 5}},
		{`{"v":"x\u00e9","q":"good","t":5}`, cache.Entry{Value: telemetry.String("xé"), Time: 5}},
		// not snapshot entries
		{`notjson`, cache.Entry{}},
		{``, cache.Entry{}},
		{`null`, cache.Entry{}},
		{`[1]`, cache.Entry{}},
		{`{"v":1}`, cache.Entry{}},                                                             // no q, no t
		{`{"v":1,"q":"good"}`, cache.Entry{}},                                                  // no t
		{`{"v":1,"q":"great","t":5}`, cache.Entry{}},                                           // unknown quality
		{`{"v":1,"q":"good","t":5.5}`, cache.Entry{}},                                          // t not an integer
		{`{"v":1,"q":"good","t":5,"seq":-1}`, cache.Entry{}},                                   // seq negative
		{`{"v":[1],"q":"good","t":5}`, cache.Entry{}},                                          // v an array
		{`{"v":{},"q":"good","t":5}`, cache.Entry{}},                                           // v an object
		{`{"v":1e999,"q":"good","t":5}`, cache.Entry{}},                                        // beyond float64
		{`{"v":-1,"k":"uint","q":"good","t":5}`, cache.Entry{}},                                // negative uint
		{`{"v":1.5,"k":"int","q":"good","t":5}`, cache.Entry{}},                                // fraction in an int
		{`{"v":"x","k":"float","q":"good","t":5}`, cache.Entry{}},                              // not a float
		{`{"v":true,"k":"float","q":"good","t":5}`, cache.Entry{}},                             // not a float
		{`{"v":1,"k":"bool","q":"good","t":5}`, cache.Entry{}},                                 // not a bool
		{`{"v":1,"k":"string","q":"good","t":5}`, cache.Entry{}},                               // not a string
		{`{"v":1,"k":"none","q":"good","t":5}`, cache.Entry{}},                                 // none with a value
		{`{"k":"int","q":"good","t":5}`, cache.Entry{}},                                        // int without a value
		{`{"v":1,"k":"complex","q":"good","t":5}`, cache.Entry{}},                              // unknown kind
		{`{"v":1,"q":"good","t":5} trailing`, cache.Entry{}},                                   // not one JSON value
		{`{"v":"\ud800","q":"good","t":5,"r":1}`, cache.Entry{}},                               // r not a string
		{`{"v":01,"q":"good","t":5}`, cache.Entry{}},                                           // not JSON
		{`{"v":1,"q":"good","t":99999999999999999999}`, cache.Entry{}},                         // t beyond int64
		{`{"v":0x10,"q":"good","t":5}`, cache.Entry{}},                                         // not JSON
		{`{"v":"NaN","q":"good","t":5}`, cache.Entry{Value: telemetry.String("NaN"), Time: 5}}, // a string without k
	} {
		got, err := decodeField([]byte(tc.in))
		if tc.want.Time == 0 {
			if err == nil {
				t.Errorf("decode %s = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("decode %s: %v", tc.in, err)
		} else if !sameEntry(got, tc.want) {
			t.Errorf("decode %s = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// sameEntry is == with NaN equal to NaN and the kind compared.
func sameEntry(a, b cache.Entry) bool {
	return a.Value.Equal(b.Value) && a.Quality == b.Quality && a.Reason == b.Reason && a.Time == b.Time && a.Seq == b.Seq
}

// FuzzDecodeField: the parser never panics, and what it accepts encodes to
// a field that decodes to the same entry.
func FuzzDecodeField(f *testing.F) {
	for _, s := range []string{
		`{"v":230.1,"q":"good","t":1700000000000,"seq":12}`,
		`{"v":18446744073709551615,"k":"uint","q":"good","t":1,"seq":1}`,
		`{"v":"NaN","k":"float","q":"stale","t":1,"seq":1}`,
		`{"v":"a\"b\u0001","q":"good","t":1}`,
		`{"v":true,"q":"good","t":1}`,
		`{"q":"bad","t":1,"seq":2,"r":"timeout"}`,
		`{"v":-1e-7,"q":"good","t":-5}`,
		`{"v":9223372036854775808,"q":"good","t":1}`,
		`notjson`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeField(data)
		if err != nil {
			return
		}
		enc := appendField(nil, e)
		back, err := decodeField(enc)
		if err != nil {
			t.Fatalf("%q decodes to %+v, which encodes to %s, which does not decode: %v", data, e, enc, err)
		}
		if !sameEntry(back, e) {
			t.Fatalf("%q decodes to %+v, which encodes to %s, which decodes to %+v", data, e, enc, back)
		}
	})
}

// ---- options and an absent Redis (no Redis needed) ----

func TestNewValidates(t *testing.T) {
	for _, o := range []Options{
		{},
		{Addr: "localhost"},
		{Addr: "127.0.0.1:6379", DB: -1},
		{Addr: "127.0.0.1:6379", TTL: -time.Second},
		{Addr: "127.0.0.1:6379", TTL: time.Microsecond},
		{Addr: "127.0.0.1:6379", Flush: -1},
		{Addr: "127.0.0.1:6379", PipelineDepth: -1},
	} {
		if c, err := New(o); err == nil {
			c.Close()
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// The gateway starts, Puts and Gets with no Redis at all.
func TestNoRedis(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newCache(t, Options{Addr: fmt.Sprintf("127.0.0.1:%d", testsvc.FreePort(t)), Registerer: reg})
	ctx := context.Background()
	if err := c.Put(ctx, []telemetry.Record{rec("m1", 1000, 1, telemetry.Point{ID: "v", Value: telemetry.Int(7)})}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Get(ctx, "m1")
	if err != nil || s["v"].Value != telemetry.Int(7) {
		t.Fatalf("Get = %v, %v; want the copy in memory", s, err)
	}
	if n := metric(t, reg, "edged_cache_read_fallbacks_total"); n < 1 {
		t.Fatalf("read fallbacks = %v", n)
	}
	if n := metric(t, reg, "edged_cache_redis_write_errors_total"); n < 1 {
		t.Fatalf("write errors = %v", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, nil); err == nil {
		t.Fatal("Put after Close succeeded")
	}
}

// ---- against a real Redis ----

func TestConformance(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	cachetest.Run(t, func(t *testing.T) cache.Cache {
		return newCache(t, Options{Addr: srv.Addr(), Prefix: "edged:test:" + t.Name() + ":"})
	})
}

func TestKeySchema(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	c := newCache(t, Options{Addr: srv.Addr()})
	ctx := context.Background()
	put(t, c,
		rec("meter-1", 1700000000000, 12,
			telemetry.Point{ID: "voltage_a", Value: telemetry.Float(230.1)},
			telemetry.Point{ID: "energy", Value: telemetry.Int(1<<53 + 1)},
			telemetry.Point{ID: "total", Value: telemetry.Uint(math.MaxUint64)},
			telemetry.Point{ID: "breaker", Value: telemetry.Bool(true)},
			telemetry.Point{ID: "serial", Value: telemetry.String(`A-"113"`)},
			telemetry.Point{ID: "freq", Quality: telemetry.Bad, Reason: "timeout"},
		),
		rec("meter-2", 1700000000001, 13, telemetry.Point{ID: "p", Value: telemetry.Float(2), Quality: telemetry.Stale}),
	)
	if _, err := c.Get(ctx, "meter-1"); err != nil { // the barrier: all is in Redis
		t.Fatal(err)
	}
	rc := client(t, srv.Addr())
	got := rc.HGetAll(ctx, "edged:snapshot:meter-1").Val()
	want := map[string]string{
		"voltage_a": `{"v":230.1,"q":"good","t":1700000000000,"seq":12}`,
		"energy":    `{"v":9007199254740993,"q":"good","t":1700000000000,"seq":12}`,
		"total":     `{"v":18446744073709551615,"k":"uint","q":"good","t":1700000000000,"seq":12}`,
		"breaker":   `{"v":true,"q":"good","t":1700000000000,"seq":12}`,
		"serial":    `{"v":"A-\"113\"","q":"good","t":1700000000000,"seq":12}`,
		"freq":      `{"q":"bad","t":1700000000000,"seq":12,"r":"timeout"}`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("HGETALL edged:snapshot:meter-1:\n got %v\nwant %v", got, want)
	}
	if got := rc.HGetAll(ctx, "edged:snapshot:meter-2").Val(); got["p"] != `{"v":2.0,"q":"stale","t":1700000000001,"seq":13}` {
		t.Fatalf("meter-2 = %v", got)
	}
	if typ := rc.Type(ctx, "edged:snapshot::marker").Val(); typ != "string" {
		t.Fatalf("marker key type %q, want string", typ)
	}
	if ttl := rc.TTL(ctx, "edged:snapshot:meter-1").Val(); ttl != -1 {
		t.Fatalf("TTL without Options.TTL = %v, want none (-1)", ttl)
	}
	s, err := c.Get(ctx, "meter-1")
	if err != nil || len(s) != 6 || s["total"].Value != telemetry.Uint(math.MaxUint64) || s["energy"].Value != telemetry.Int(1<<53+1) || s["freq"].Reason != "timeout" {
		t.Fatalf("Get = %+v, %v", s, err)
	}
}

func TestTTL(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	c := newCache(t, Options{Addr: srv.Addr(), TTL: time.Second})
	ctx := context.Background()
	rc := client(t, srv.Addr())
	for i := range 3 { // each write refreshes the expiry
		put(t, c, rec("m1", int64(1000+i), uint64(i), telemetry.Point{ID: "v", Value: telemetry.Int(int64(i))}))
		if _, err := c.Get(ctx, "m1"); err != nil {
			t.Fatal(err)
		}
		if ttl := rc.PTTL(ctx, "edged:snapshot:m1").Val(); ttl <= 0 || ttl > time.Second {
			t.Fatalf("write %d: PTTL = %v, want in (0, 1s]", i, ttl)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// A device whose hash expired comes back whole with its next write, and a
// resync does not bring back a device that stopped reporting.
func TestTTLExpired(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	c := newCache(t, Options{Addr: srv.Addr(), TTL: 200 * time.Millisecond})
	ctx := context.Background()
	rc := client(t, srv.Addr())
	put(t, c, rec("m1", 1000, 1, telemetry.Point{ID: "a", Value: telemetry.Int(1)}, telemetry.Point{ID: "b", Value: telemetry.Int(2)}),
		rec("gone", 1000, 1, telemetry.Point{ID: "a", Value: telemetry.Int(3)}))
	if _, err := c.Get(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() string {
		if n := rc.Exists(ctx, "edged:snapshot:m1", "edged:snapshot:gone").Val(); n != 0 {
			return fmt.Sprintf("%d keys not expired", n)
		}
		return ""
	})
	rc.Del(ctx, "edged:snapshot::marker") // forces a resync
	put(t, c, rec("m1", 2000, 2, telemetry.Point{ID: "a", Value: telemetry.Int(10)}))
	waitFor(t, 5*time.Second, func() string {
		if h := rc.HGetAll(ctx, "edged:snapshot:m1").Val(); len(h) != 2 {
			return fmt.Sprintf("m1 = %v, want a and b", h)
		}
		if rc.Exists(ctx, "edged:snapshot::marker").Val() != 1 {
			return "no resync yet"
		}
		return ""
	})
	if n := rc.Exists(ctx, "edged:snapshot:gone").Val(); n != 0 {
		t.Fatal("the resync brought back a device that stopped reporting")
	}
}

func TestRedisDown(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	reg := prometheus.NewRegistry()
	logs := &logRecorder{}
	c := newCache(t, Options{Addr: srv.Addr(), Registerer: reg, Logger: slog.New(logs)})
	ctx := context.Background()
	if _, err := c.Get(ctx, "m0"); err != nil { // connected
		t.Fatal(err)
	}
	srv.Stop()

	const devices, points, records = 20, 100, 10000
	latest := map[string]map[string]int64{}
	for i := range records {
		dev, pt := fmt.Sprintf("m%d", i%devices), fmt.Sprintf("p%d", (i/devices)%points)
		if err := c.Put(ctx, []telemetry.Record{rec(dev, int64(1000+i), uint64(i), telemetry.Point{ID: pt, Value: telemetry.Int(int64(i))})}); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
		if latest[dev] == nil {
			latest[dev] = map[string]int64{}
		}
		latest[dev][pt] = int64(i)
	}
	waitFor(t, 10*time.Second, func() string {
		if n := metric(t, reg, "edged_cache_redis_write_errors_total"); n < 1 {
			return fmt.Sprintf("write errors %v", n)
		}
		if n := metric(t, reg, "edged_cache_dirty_points"); n != devices*points { // coalesced: 10000 writes, 2000 points
			return fmt.Sprintf("dirty points %v, want %d", n, devices*points)
		}
		return ""
	})
	s, err := c.Get(ctx, "m3") // from memory, at once
	if err != nil || len(s) != points || s["p7"].Value != telemetry.Int(latest["m3"]["p7"]) {
		t.Fatalf("Get while down = %d points, %v", len(s), err)
	}
	if n := metric(t, reg, "edged_cache_read_fallbacks_total"); n < 1 {
		t.Fatalf("read fallbacks = %v", n)
	}

	srv.Start()
	rc := client(t, srv.Addr())
	waitFor(t, 10*time.Second, func() string {
		for dev, pts := range latest {
			h, err := rc.HGetAll(ctx, "edged:snapshot:"+dev).Result()
			if err != nil {
				return err.Error()
			}
			for pt, v := range pts {
				e, err := decodeField([]byte(h[pt]))
				if err != nil || e.Value != telemetry.Int(v) {
					return fmt.Sprintf("%s/%s = %q, want %d", dev, pt, h[pt], v)
				}
			}
		}
		return ""
	})
	if n := metric(t, reg, "edged_cache_dirty_points"); n != 0 {
		t.Fatalf("dirty points after recovery = %v", n)
	}
	if n := metric(t, reg, "edged_cache_resyncs_total"); n < 2 {
		t.Fatalf("resyncs = %v, want startup and recovery", n)
	}
	waitFor(t, 5*time.Second, func() string {
		if n := logs.count(slog.LevelInfo, "redis available again"); n != 1 {
			return fmt.Sprintf("%d recovery log lines", n)
		}
		return ""
	})
	if n := logs.count(slog.LevelWarn, "redis unavailable"); n != 1 {
		t.Fatalf("%d 'unavailable' log lines for one outage, want 1:\n%s", n, logs)
	}
	s, err = c.Get(ctx, "m3")
	if err != nil || len(s) != points {
		t.Fatalf("Get after recovery = %d points, %v", len(s), err)
	}
}

func TestFlushAll(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	reg := prometheus.NewRegistry()
	c := newCache(t, Options{Addr: srv.Addr(), Registerer: reg})
	ctx := context.Background()
	for d := range 3 {
		var pts []telemetry.Point
		for p := range 10 {
			pts = append(pts, telemetry.Point{ID: fmt.Sprintf("p%d", p), Value: telemetry.Float(float64(d*100 + p))})
		}
		put(t, c, rec(fmt.Sprintf("m%d", d), 1000, 1, pts...))
	}
	if _, err := c.Get(ctx, "m0"); err != nil {
		t.Fatal(err)
	}
	rc := client(t, srv.Addr())
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	put(t, c, rec("m0", 2000, 2, telemetry.Point{ID: "extra", Value: telemetry.Bool(true)}))
	waitFor(t, 10*time.Second, func() string {
		for d := range 3 {
			h := rc.HGetAll(ctx, fmt.Sprintf("edged:snapshot:m%d", d)).Val()
			want := 10
			if d == 0 {
				want = 11
			}
			if len(h) != want {
				return fmt.Sprintf("m%d has %d fields, want %d", d, len(h), want)
			}
		}
		return ""
	})
	if e, err := decodeField([]byte(rc.HGet(ctx, "edged:snapshot:m2", "p9").Val())); err != nil || e.Value != telemetry.Float(209) {
		t.Fatalf("m2/p9 = %+v, %v", e, err)
	}
	if n := metric(t, reg, "edged_cache_resyncs_total"); n < 2 {
		t.Fatalf("resyncs = %v, want startup and after FLUSHALL", n)
	}
}

func TestForeignField(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	reg := prometheus.NewRegistry()
	c := newCache(t, Options{Addr: srv.Addr(), Registerer: reg})
	ctx := context.Background()
	put(t, c, rec("m1", 1000, 1, telemetry.Point{ID: "a", Value: telemetry.Int(1)}, telemetry.Point{ID: "b", Value: telemetry.String("x")}))
	if _, err := c.Get(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	rc := client(t, srv.Addr())
	if err := rc.HSet(ctx, "edged:snapshot:m1", "foreign", "notjson", "half", `{"v":1}`, "other", `{"v":2,"q":"good","t":5}`).Err(); err != nil {
		t.Fatal(err)
	}
	s, err := c.Get(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 3 || s["a"].Value != telemetry.Int(1) || s["b"].Value != telemetry.String("x") || s["other"].Value != telemetry.Int(2) {
		t.Fatalf("Get = %+v", s)
	}
	if n := metric(t, reg, "edged_cache_bad_fields_total"); n != 2 {
		t.Fatalf("bad fields = %v, want 2", n)
	}
}

// A key of another type at a device's key: that device's writes are refused
// and retried, the others go through.
func TestRefusedWrite(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	reg := prometheus.NewRegistry()
	c := newCache(t, Options{Addr: srv.Addr(), Registerer: reg})
	ctx := context.Background()
	rc := client(t, srv.Addr())
	if err := rc.Set(ctx, "edged:snapshot:m1", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	put(t, c, rec("m1", 1000, 1, telemetry.Point{ID: "a", Value: telemetry.Int(1)}), rec("m2", 1000, 1, telemetry.Point{ID: "a", Value: telemetry.Int(2)}))
	s, err := c.Get(ctx, "m2")
	if err != nil || s["a"].Value != telemetry.Int(2) {
		t.Fatalf("m2 = %+v, %v", s, err)
	}
	if s, err := c.Get(ctx, "m1"); err != nil || s["a"].Value != telemetry.Int(1) { // WRONGTYPE: from memory
		t.Fatalf("m1 = %+v, %v", s, err)
	}
	if n := metric(t, reg, "edged_cache_redis_write_errors_total"); n < 1 {
		t.Fatalf("write errors = %v", n)
	}
	rc.Del(ctx, "edged:snapshot:m1")
	waitFor(t, 5*time.Second, func() string {
		if v := rc.HGet(ctx, "edged:snapshot:m1", "a").Val(); v == "" {
			return "m1/a not retried"
		}
		return ""
	})
}

// Many small pipelines, two in flight: every device arrives whole, with its
// expiry (a device's HSET and PEXPIRE are never split).
func TestManyPipelines(t *testing.T) {
	testsvc.Integration(t)
	srv := testsvc.StartRedis(t)
	ctx := context.Background()
	rc := client(t, srv.Addr())
	for _, depth := range []int{1, 2, 3, 7} {
		prefix := fmt.Sprintf("edged:depth%d:", depth)
		c := newCache(t, Options{Addr: srv.Addr(), Prefix: prefix, PipelineDepth: depth, TTL: time.Minute})
		const devices, points = 50, 5
		for round := range 3 {
			var recs []telemetry.Record
			for d := range devices {
				var pts []telemetry.Point
				for p := range points {
					pts = append(pts, telemetry.Point{ID: fmt.Sprintf("p%d", p), Value: telemetry.Int(int64(round*1000 + d*10 + p))})
				}
				recs = append(recs, rec(fmt.Sprintf("m%d", d), int64(1000+round), uint64(round), pts...))
			}
			put(t, c, recs...)
		}
		if _, err := c.Get(ctx, "m0"); err != nil {
			t.Fatal(err)
		}
		for d := range devices {
			key := fmt.Sprintf("%sm%d", prefix, d)
			h := rc.HGetAll(ctx, key).Val()
			e, err := decodeField([]byte(h["p4"]))
			if len(h) != points || err != nil || e.Value != telemetry.Int(int64(2000+d*10+4)) {
				t.Fatalf("depth %d: %s = %v", depth, key, h)
			}
			if ttl := rc.PTTL(ctx, key).Val(); ttl <= 0 {
				t.Fatalf("depth %d: %s has no expiry (%v)", depth, key, ttl)
			}
		}
	}
}

// ---- helpers ----

func newCache(t *testing.T, o Options) *Cache {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func client(t *testing.T, addr string) *goredis.Client {
	rc := goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { rc.Close() })
	return rc
}

func rec(dev string, ms int64, seq uint64, pts ...telemetry.Point) telemetry.Record {
	return telemetry.Record{Device: dev, Time: ms, Seq: seq, Points: pts}
}

func put(t *testing.T, c cache.Cache, recs ...telemetry.Record) {
	t.Helper()
	if err := c.Put(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
}

// metric is the value of a counter or gauge in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return sum
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// waitFor polls cond (which returns what is still wrong, or "") until it
// holds or within passes.
func waitFor(t *testing.T, within time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", within, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logRecorder is a slog.Handler that keeps the records.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

func (l *logRecorder) count(level slog.Level, prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if r.Level == level && strings.HasPrefix(r.Message, prefix) {
			n++
		}
	}
	return n
}

func (l *logRecorder) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.recs {
		fmt.Fprintf(&b, "%s %s\n", r.Level, r.Message)
	}
	return b.String()
}
