package modbus

import (
	"fmt"
	"sort"

	"github.com/goburrow/modbus"
)

// table is one of the four Modbus data tables.
type table uint8

const (
	coils table = iota
	discreteInputs
	inputRegisters
	holdingRegisters
	numTables
)

var tableNames = [numTables]string{"coil", "discrete_input", "input_register", "holding_register"}

func (t table) String() string {
	if t < numTables {
		return tableNames[t]
	}
	return fmt.Sprintf("table(%d)", uint8(t))
}

// isBits reports whether the table holds single bits rather than registers.
func (t table) isBits() bool { return t == coils || t == discreteInputs }

// maxQuantity is the most a single read request may ask for: 2000 bits
// (FC1, FC2) or 125 registers (FC3, FC4), per the Modbus specification.
func (t table) maxQuantity() int {
	if t.isBits() {
		return 2000
	}
	return 125
}

// readFunction is the function code that reads the table.
func (t table) readFunction() byte {
	return [numTables]byte{
		coils:            modbus.FuncCodeReadCoils,
		discreteInputs:   modbus.FuncCodeReadDiscreteInputs,
		inputRegisters:   modbus.FuncCodeReadInputRegisters,
		holdingRegisters: modbus.FuncCodeReadHoldingRegisters,
	}[t]
}

// parseTable accepts the canonical table names of config.Point.Table and the
// aliases config accepts, so a driver built from an unvalidated config reads
// the same tables.
func parseTable(s string) (table, bool) {
	switch s {
	case "coil", "coils":
		return coils, true
	case "discrete_input", "discrete":
		return discreteInputs, true
	case "input_register", "input":
		return inputRegisters, true
	case "holding_register", "holding":
		return holdingRegisters, true
	}
	return 0, false
}

// span is the part of a table one point occupies: count registers (or bits)
// from address.
type span struct {
	table   table
	address int
	count   int
}

// readRequest is one read the plan sends: count registers (or bits) of table
// from address.
type readRequest struct {
	table   table
	address int
	count   int
}

// location is where a point's value sits: request req, offset registers (or
// bits) from the request's first address. req is -1 for a point that is not
// read (a write-only point).
type location struct {
	req    int
	offset int
}

// addressRange is an inclusive range of addresses in one table.
type addressRange struct {
	table    table
	from, to int
}

// planLimits bound the requests of one device.
type planLimits struct {
	maxRegisters int // registers per FC3/FC4 request; 0 or more than 125: 125
	maxBits      int // bits per FC1/FC2 request; 0 or more than 2000: 2000
	// maxGap is how many unused addresses a request may span between two
	// points to read them together; 0: only adjacent points share one.
	maxGap int
	// noRead are addresses the device refuses to be read: no request
	// covers any of them.
	noRead []addressRange
}

// max is the largest request for table t.
func (l *planLimits) max(t table) int {
	m := l.maxRegisters
	if t.isBits() {
		m = l.maxBits
	}
	if m <= 0 || m > t.maxQuantity() {
		return t.maxQuantity()
	}
	return m
}

// forbidden returns a no_read range of table t that meets the addresses
// [from, to), if any.
func (l *planLimits) forbidden(t table, from, to int) (addressRange, bool) {
	for _, r := range l.noRead {
		if r.table == t && r.from < to && from <= r.to {
			return r, true
		}
	}
	return addressRange{}, false
}

// planError says why span Span cannot be read.
type planError struct {
	Span int
	Msg  string
}

func (e *planError) Error() string { return e.Msg }

// planReads merges the spans of one device's points into the fewest read
// requests such that
//
//   - a request reads one table, and at most lim.max(table) registers or bits;
//   - the points of a request are at most lim.maxGap unused addresses apart:
//     a request reads the gaps between its points, no more;
//   - no request covers an address of lim.noRead;
//   - every span lies inside exactly one request: spans that overlap (bits
//     of one register, or one register read as two types) share it.
//
// Requests come out by table (coils, discrete inputs, input registers,
// holding registers), then address; locs[i] says where span i is found.
//
// The plan is minimal. Spans that overlap must share a request, so the
// planner first joins them into clusters: disjoint intervals, sorted. A
// request is then a run of consecutive clusters, and whether a run can be one
// request is hereditary: any shorter run inside it is shorter, has a subset of
// its gaps and covers a subset of its addresses, so it can be one request
// too. For such runs, extending each request as far as it goes is optimal
// (the k-th greedy request always ends at or after the k-th request of any
// other plan, by induction), and that is what planReads does. The property
// test checks this against a brute-force minimum.
//
// A span that cannot be read at all (wider than the limit, with its
// overlapping spans, or meeting a no_read range, or outside 0-65535) is a
// *planError naming it.
func planReads(spans []span, lim planLimits) (reqs []readRequest, locs []location, err error) {
	locs = make([]location, len(spans))
	idx := make([]int, len(spans))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool {
		sa, sb := spans[idx[a]], spans[idx[b]]
		if sa.table != sb.table {
			return sa.table < sb.table
		}
		if sa.address != sb.address {
			return sa.address < sb.address
		}
		return sa.count > sb.count
	})
	for _, i := range idx {
		s := spans[i]
		if s.table >= numTables || s.count < 1 || s.address < 0 || s.address+s.count > 65536 {
			return nil, nil, &planError{i, fmt.Sprintf("%s address %d, %d wide: outside 0-65535", s.table, s.address, s.count)}
		}
	}
	cur := -1
	for k := 0; k < len(idx); {
		// the cluster: idx[k] and every following span that overlaps it
		first := spans[idx[k]]
		t, start, end := first.table, first.address, first.address+first.count
		j := k + 1
		for ; j < len(idx) && spans[idx[j]].table == t && spans[idx[j]].address < end; j++ {
			end = max(end, spans[idx[j]].address+spans[idx[j]].count)
		}
		unit := "registers"
		if t.isBits() {
			unit = "bits"
		}
		if end-start > lim.max(t) {
			msg := fmt.Sprintf("%s spans %d %s, more than one request may read (%d)", describe(readRequest{t, start, end - start}), end-start, unit, lim.max(t))
			if j-k > 1 {
				msg = fmt.Sprintf("with the points it overlaps, %s", msg)
			}
			return nil, nil, &planError{idx[k], msg}
		}
		if r, bad := lim.forbidden(t, start, end); bad {
			return nil, nil, &planError{idx[k], fmt.Sprintf("%s is inside no_read %d-%d of %s", describe(readRequest{t, start, end - start}), r.from, r.to, t)}
		}
		merge := false
		if cur >= 0 && reqs[cur].table == t {
			r := reqs[cur]
			rend := r.address + r.count
			_, bad := lim.forbidden(t, rend, start)
			merge = start-rend <= lim.maxGap && end-r.address <= lim.max(t) && !bad
		}
		if merge {
			reqs[cur].count = end - reqs[cur].address
		} else {
			reqs = append(reqs, readRequest{table: t, address: start, count: end - start})
			cur = len(reqs) - 1
		}
		for _, i := range idx[k:j] {
			locs[i] = location{req: cur, offset: spans[i].address - reqs[cur].address}
		}
		k = j
	}
	return reqs, locs, nil
}
