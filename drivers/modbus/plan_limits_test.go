package modbus

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
)

func TestPlanReadsLimits(t *testing.T) {
	hr := func(a, n int) span { return span{holdingRegisters, a, n} }
	ir := func(a, n int) span { return span{inputRegisters, a, n} }
	co := func(a int) span { return span{coils, a, 1} }
	req := func(t table, a, n int) readRequest { return readRequest{t, a, n} }
	no := func(t table, from, to int) addressRange { return addressRange{t, from, to} }
	for _, tc := range []struct {
		name  string
		spans []span
		lim   planLimits
		reqs  []readRequest
		locs  []location
	}{
		{
			"max_gap 0: a gap of one splits",
			[]span{hr(0, 2), hr(3, 1)}, planLimits{},
			[]readRequest{req(holdingRegisters, 0, 2), req(holdingRegisters, 3, 1)},
			[]location{{0, 0}, {1, 0}},
		},
		{
			"max_gap 1 reads the unused register",
			[]span{hr(0, 2), hr(3, 1)}, planLimits{maxGap: 1},
			[]readRequest{req(holdingRegisters, 0, 4)},
			[]location{{0, 0}, {0, 3}},
		},
		{
			"max_gap is per gap, not in total",
			[]span{hr(0, 1), hr(5, 1), hr(10, 1), hr(15, 1)}, planLimits{maxGap: 4},
			[]readRequest{req(holdingRegisters, 0, 16)},
			[]location{{0, 0}, {0, 5}, {0, 10}, {0, 15}},
		},
		{
			"a gap one wider than max_gap splits",
			[]span{hr(0, 1), hr(5, 1), hr(11, 1)}, planLimits{maxGap: 4},
			[]readRequest{req(holdingRegisters, 0, 6), req(holdingRegisters, 11, 1)},
			[]location{{0, 0}, {0, 5}, {1, 0}},
		},
		{
			"max_gap applies to bits too",
			[]span{co(0), co(3), co(9)}, planLimits{maxGap: 2},
			[]readRequest{req(coils, 0, 4), req(coils, 9, 1)},
			[]location{{0, 0}, {0, 3}, {1, 0}},
		},
		{
			"max_registers",
			[]span{hr(0, 2), hr(2, 2), hr(4, 2), hr(6, 2)}, planLimits{maxRegisters: 4},
			[]readRequest{req(holdingRegisters, 0, 4), req(holdingRegisters, 4, 4)},
			[]location{{0, 0}, {0, 2}, {1, 0}, {1, 2}},
		},
		{
			"max_registers counts the gap read",
			[]span{hr(0, 2), hr(5, 2)}, planLimits{maxRegisters: 6, maxGap: 10},
			[]readRequest{req(holdingRegisters, 0, 2), req(holdingRegisters, 5, 2)},
			[]location{{0, 0}, {1, 0}},
		},
		{
			"max_bits",
			[]span{co(0), co(1), co(2)}, planLimits{maxBits: 2},
			[]readRequest{req(coils, 0, 2), req(coils, 2, 1)},
			[]location{{0, 0}, {0, 1}, {1, 0}},
		},
		{
			"max_registers above 125 is 125",
			[]span{hr(0, 100), hr(100, 26)}, planLimits{maxRegisters: 200},
			[]readRequest{req(holdingRegisters, 0, 100), req(holdingRegisters, 100, 26)},
			[]location{{0, 0}, {1, 0}},
		},
		{
			"no_read in a gap splits",
			[]span{hr(0, 2), hr(10, 2)}, planLimits{maxGap: 64, noRead: []addressRange{no(holdingRegisters, 5, 5)}},
			[]readRequest{req(holdingRegisters, 0, 2), req(holdingRegisters, 10, 2)},
			[]location{{0, 0}, {1, 0}},
		},
		{
			"no_read right after a point and right before the next",
			[]span{hr(0, 2), hr(3, 1), hr(5, 1)}, planLimits{maxGap: 64, noRead: []addressRange{no(holdingRegisters, 2, 2), no(holdingRegisters, 4, 4)}},
			[]readRequest{req(holdingRegisters, 0, 2), req(holdingRegisters, 3, 1), req(holdingRegisters, 5, 1)},
			[]location{{0, 0}, {1, 0}, {2, 0}},
		},
		{
			"no_read of another table does not split",
			[]span{hr(0, 2), hr(10, 2)}, planLimits{maxGap: 64, noRead: []addressRange{no(inputRegisters, 0, 100), no(coils, 5, 5)}},
			[]readRequest{req(holdingRegisters, 0, 12)},
			[]location{{0, 0}, {0, 10}},
		},
		{
			"no_read beside a gap the plan does not read anyway",
			[]span{hr(10, 2), hr(12, 2)}, planLimits{maxGap: 64, noRead: []addressRange{no(holdingRegisters, 0, 9), no(holdingRegisters, 14, 20)}},
			[]readRequest{req(holdingRegisters, 10, 4)},
			[]location{{0, 0}, {0, 2}},
		},
		{
			"bits of one register share its read",
			[]span{hr(4, 1), hr(4, 1), hr(5, 2), hr(4, 1)}, planLimits{maxRegisters: 2},
			[]readRequest{req(holdingRegisters, 4, 1), req(holdingRegisters, 5, 2)},
			[]location{{0, 0}, {0, 0}, {1, 0}, {0, 0}},
		},
		{
			"tables never merge across a gap either",
			[]span{ir(0, 1), hr(2, 1)}, planLimits{maxGap: 64},
			[]readRequest{req(inputRegisters, 0, 1), req(holdingRegisters, 2, 1)},
			[]location{{0, 0}, {1, 0}},
		},
		{
			"greedy fills a request before it starts the next",
			[]span{hr(0, 1), hr(2, 1), hr(4, 1), hr(6, 1)}, planLimits{maxRegisters: 3, maxGap: 1},
			[]readRequest{req(holdingRegisters, 0, 3), req(holdingRegisters, 4, 3)},
			[]location{{0, 0}, {0, 2}, {1, 0}, {1, 2}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs, locs, err := planReads(tc.spans, tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(reqs, tc.reqs) {
				t.Errorf("requests\n got %v\nwant %v", reqs, tc.reqs)
			}
			if !slices.Equal(locs, tc.locs) {
				t.Errorf("locations\n got %v\nwant %v", locs, tc.locs)
			}
			if msg := checkPlan(tc.spans, tc.lim, reqs, locs); msg != "" {
				t.Error(msg)
			}
		})
	}
}

func TestPlanReadsErrors(t *testing.T) {
	hr := func(a, n int) span { return span{holdingRegisters, a, n} }
	for _, tc := range []struct {
		name  string
		spans []span
		lim   planLimits
		bad   int
		want  string
	}{
		{"wider than max_registers", []span{hr(0, 1), hr(10, 4)}, planLimits{maxRegisters: 2}, 1, "holding_register 10-13 spans 4 registers, more than one request may read (2)"},
		{"overlapping spans wider together", []span{hr(0, 2), hr(1, 2)}, planLimits{maxRegisters: 2}, 0, "with the points it overlaps"},
		{"inside no_read", []span{hr(0, 1), hr(10, 2)}, planLimits{noRead: []addressRange{{holdingRegisters, 11, 20}}}, 1, "holding_register 10-11 is inside no_read 11-20 of holding_register"},
		{"beyond 65535", []span{hr(65535, 2)}, planLimits{}, 0, "outside 0-65535"},
		{"negative", []span{hr(-1, 1)}, planLimits{}, 0, "outside 0-65535"},
		{"empty", []span{hr(0, 0)}, planLimits{}, 0, "outside 0-65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := planReads(tc.spans, tc.lim)
			pe, ok := err.(*planError)
			if !ok || pe.Span != tc.bad || !strings.Contains(pe.Msg, tc.want) {
				t.Fatalf("error %v, want span %d: %q", err, tc.bad, tc.want)
			}
		})
	}
}

// checkPlan checks a plan against its contract, independently of how it
// was made: every span lies inside the request its location names, and no
// other request covers any of its addresses; every request keeps its
// table's limit and covers no no_read address; requests do not overlap.
// It returns what is wrong, or "".
func checkPlan(spans []span, lim planLimits, reqs []readRequest, locs []location) string {
	if len(locs) != len(spans) {
		return fmt.Sprintf("%d locations for %d spans", len(locs), len(spans))
	}
	for i, s := range spans {
		l := locs[i]
		if l.req < 0 || l.req >= len(reqs) {
			return fmt.Sprintf("span %v: location %v names no request", s, l)
		}
		r := reqs[l.req]
		if r.table != s.table || s.address != r.address+l.offset || l.offset < 0 || l.offset+s.count > r.count {
			return fmt.Sprintf("span %v is not inside request %v at %v", s, r, l)
		}
		for k, o := range reqs {
			if k != l.req && o.table == s.table && o.address < s.address+s.count && s.address < o.address+o.count {
				return fmt.Sprintf("span %v is covered by request %v as well as by %v", s, o, r)
			}
		}
	}
	// the points of a request are at most max_gap unused addresses apart
	used := make([][]bool, len(reqs))
	for k, r := range reqs {
		used[k] = make([]bool, r.count)
	}
	for i, s := range spans {
		for a := range s.count {
			used[locs[i].req][locs[i].offset+a] = true
		}
	}
	for k, r := range reqs {
		run := 0
		for a, u := range used[k] {
			if u {
				run = 0
			} else if run++; run > lim.maxGap {
				return fmt.Sprintf("request %v reads %d unused addresses before %d, more than max_gap %d", r, run, r.address+a+1, lim.maxGap)
			}
		}
		if r.count > 0 && (!used[k][0] || !used[k][r.count-1]) {
			return fmt.Sprintf("request %v reads unused addresses at an end", r)
		}
	}
	for k, r := range reqs {
		if r.count < 1 || r.count > lim.max(r.table) {
			return fmt.Sprintf("request %v breaks the limit %d", r, lim.max(r.table))
		}
		for a := r.address; a < r.address+r.count; a++ {
			for _, n := range lim.noRead {
				if n.table == r.table && n.from <= a && a <= n.to {
					return fmt.Sprintf("request %v reads address %d of no_read %v", r, a, n)
				}
			}
		}
		for _, o := range reqs[k+1:] {
			if o.table == r.table && o.address < r.address+r.count && r.address < o.address+o.count {
				return fmt.Sprintf("requests %v and %v overlap", r, o)
			}
		}
	}
	return ""
}

// minRequests is the fewest requests any plan can have, by brute force: a
// dynamic programme over the spans of each table sorted by address, where
// best[j] is the fewest requests for the first j spans and a request may
// take spans i..j-1 when, checked address by address, the range from the
// first span's address to the furthest end fits the limit, touches no
// no_read address, leaves no run of unused addresses longer than max_gap,
// and no span outside i..j-1 shares an address with it. It knows nothing of
// clusters or greediness. O(n² · width): for small cases and the report.
func minRequests(spans []span, lim planLimits) int {
	total := 0
	for t := range numTables {
		var ss []span
		for _, s := range spans {
			if s.table == t {
				ss = append(ss, s)
			}
		}
		if len(ss) == 0 {
			continue
		}
		sort.Slice(ss, func(a, b int) bool { return ss[a].address < ss[b].address })
		// endBefore[i]: one past the furthest address of ss[:i]
		endBefore := make([]int, len(ss)+1)
		for i, s := range ss {
			endBefore[i+1] = max(endBefore[i], s.address+s.count)
		}
		const inf = 1 << 30
		best := make([]int, len(ss)+1)
		for j := 1; j <= len(ss); j++ {
			best[j] = inf
			// going further back only widens the request: stop past the limit
			for i := j - 1; i >= 0 && endBefore[j]-ss[i].address <= lim.max(t); i-- {
				if best[i] < inf && oneRequest(ss, endBefore, i, j, lim) {
					best[j] = min(best[j], best[i]+1)
				}
			}
		}
		if best[len(ss)] >= inf {
			return -1
		}
		total += best[len(ss)]
	}
	return total
}

// oneRequest says whether spans ss[i:j] (one table, sorted by address) may
// be read by one request; endBefore[k] is one past the furthest address of
// ss[:k].
func oneRequest(ss []span, endBefore []int, i, j int, lim planLimits) bool {
	t := ss[i].table
	from, to := ss[i].address, 0 // to: one past the last address
	for _, s := range ss[i:j] {
		to = max(to, s.address+s.count)
	}
	if to-from > lim.max(t) {
		return false
	}
	// no span outside i..j-1 may share an address with the request: another
	// request would cover it too
	if endBefore[i] > from || (j < len(ss) && ss[j].address < to) {
		return false
	}
	used := make([]bool, to-from)
	for _, s := range ss[i:j] {
		for a := s.address; a < s.address+s.count; a++ {
			used[a-from] = true
		}
	}
	run := 0
	for a := from; a < to; a++ {
		for _, n := range lim.noRead {
			if n.table == t && n.from <= a && a <= n.to {
				return false
			}
		}
		if used[a-from] {
			run = 0
		} else if run++; run > lim.maxGap {
			return false
		}
	}
	return true
}

// randomCase makes a small random device: spans of widths 1, 2 and 4 in two
// tables (plus bits of one register sharing it), random gaps, random no_read
// ranges that miss the spans, random limits.
func randomCase(rng *rand.Rand) ([]span, planLimits) {
	var spans []span
	lim := planLimits{maxGap: rng.IntN(6), maxRegisters: 1 + rng.IntN(12), maxBits: 1 + rng.IntN(12)}
	if rng.IntN(4) == 0 {
		lim.maxGap = 0
	}
	for _, t := range []table{coils, holdingRegisters} {
		a := rng.IntN(5)
		n := rng.IntN(14)
		for range n {
			w := 1
			if !t.isBits() {
				w = []int{1, 1, 2, 2, 4}[rng.IntN(5)]
				w = min(w, lim.maxRegisters)
			}
			spans = append(spans, span{t, a, w})
			if w == 1 && !t.isBits() && rng.IntN(4) == 0 {
				spans = append(spans, span{t, a, 1}) // another bit of the register
			}
			gapEnd := a + w + []int{0, 0, 0, 1, 2, 3, 5, 8}[rng.IntN(8)]
			// a no_read range inside the gap, sometimes
			if gapEnd > a+w && rng.IntN(3) == 0 {
				from := a + w + rng.IntN(gapEnd-a-w)
				lim.noRead = append(lim.noRead, addressRange{t, from, from + rng.IntN(gapEnd-from)})
			}
			a = gapEnd
		}
	}
	rng.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
	return spans, lim
}

// TestPlanReadsProperty: on random devices, every plan keeps the contract
// (checkPlan) and has exactly the fewest requests possible (minRequests).
func TestPlanReadsProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for c := range n {
		spans, lim := randomCase(rng)
		reqs, locs, err := planReads(spans, lim)
		if err != nil {
			t.Fatalf("case %d: %v\nspans %v\nlimits %+v", c, err, spans, lim)
		}
		if msg := checkPlan(spans, lim, reqs, locs); msg != "" {
			t.Fatalf("case %d: %s\nspans %v\nlimits %+v\nplan %v", c, msg, spans, lim, reqs)
		}
		if want := minRequests(spans, lim); len(reqs) != want {
			t.Fatalf("case %d: %d requests, the minimum is %d\nspans %v\nlimits %+v\nplan %v", c, len(reqs), want, spans, lim, reqs)
		}
	}
}

// reportTable is a 1,000-point holding register table as device manuals
// have them: blocks of 16-bit, 32-bit and 64-bit values, with unused
// registers between many of them (reserved words, and gaps between blocks).
func reportTable(contiguous bool) []span {
	rng := rand.New(rand.NewPCG(7, 1000))
	spans := make([]span, 0, 1000)
	a := 0
	for range 1000 {
		w := []int{1, 1, 2, 2, 2, 4}[rng.IntN(6)]
		spans = append(spans, span{holdingRegisters, a, w})
		a += w
		if contiguous {
			continue
		}
		switch r := rng.IntN(100); {
		case r < 55: // adjacent
		case r < 80:
			a += 1 + rng.IntN(3) // a reserved word or three
		case r < 93:
			a += 4 + rng.IntN(12)
		default:
			a += 16 + rng.IntN(80) // the next block
		}
	}
	return spans
}

// BenchmarkPlanReads plans the 1,000-point table at max_gap 0, 4, 16 and 64
// (and a contiguous table) and reports requests per poll cycle, the
// minimum possible under the same limits (brute force), their ratio, and
// registers read per cycle. Run it with -bench PlanReads -benchtime 1x.
func BenchmarkPlanReads(b *testing.B) {
	for _, tc := range []struct {
		name       string
		contiguous bool
		gap        int
	}{{"contiguous", true, 0}, {"gaps/max_gap=0", false, 0}, {"gaps/max_gap=4", false, 4}, {"gaps/max_gap=16", false, 16}, {"gaps/max_gap=64", false, 64}} {
		spans := reportTable(tc.contiguous)
		lim := planLimits{maxGap: tc.gap}
		b.Run(tc.name, func(b *testing.B) {
			var reqs []readRequest
			for b.Loop() {
				reqs, _, _ = planReads(spans, lim)
			}
			want := minRequests(spans, lim)
			read := 0
			for _, r := range reqs {
				read += r.count
			}
			b.ReportMetric(float64(len(reqs)), "requests/poll")
			b.ReportMetric(float64(want), "min-requests/poll")
			b.ReportMetric(float64(len(reqs))/float64(want), "ratio")
			b.ReportMetric(float64(read), "registers/poll")
			if len(reqs) != want {
				b.Errorf("%d requests, the minimum is %d", len(reqs), want)
			}
		})
	}
}

// TestPlanReport prints the table of BenchmarkPlanReads (go test -run
// PlanReport -v) and checks that a contiguous table needs exactly
// ceil(registers / 125) requests.
func TestPlanReport(t *testing.T) {
	t.Logf("%-12s %-8s %9s %9s %6s %10s %10s %10s", "table", "max_gap", "requests", "minimum", "ratio", "registers", "used", "used/125")
	for _, tc := range []struct {
		contiguous bool
		gap        int
	}{{true, 0}, {false, 0}, {false, 4}, {false, 16}, {false, 64}} {
		spans := reportTable(tc.contiguous)
		lim := planLimits{maxGap: tc.gap}
		reqs, locs, err := planReads(spans, lim)
		if err != nil {
			t.Fatal(err)
		}
		if msg := checkPlan(spans, lim, reqs, locs); msg != "" {
			t.Fatal(msg)
		}
		want := minRequests(spans, lim)
		read, used := 0, 0
		for _, r := range reqs {
			read += r.count
		}
		for _, s := range spans {
			used += s.count
		}
		name := "gaps"
		if tc.contiguous {
			name = "contiguous"
			if bound := (used + 124) / 125; len(reqs) != bound {
				t.Errorf("contiguous table of %d registers: %d requests, want %d", used, len(reqs), bound)
			}
		}
		t.Logf("%-12s %-8d %9d %9d %6.2f %10d %10d %10d", name, tc.gap, len(reqs), want, float64(len(reqs))/float64(want), read, used, (used+124)/125)
		if len(reqs) != want {
			t.Errorf("%s max_gap %d: %d requests, minimum %d", name, tc.gap, len(reqs), want)
		}
	}
}
