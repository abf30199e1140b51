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
// bits) from the request's first address.
type location struct {
	req    int
	offset int
}

// planReads merges the spans of one device's points into read requests:
// spans of the same table that overlap or are adjacent share a request, as
// long as it stays within the protocol's limit (125 registers, 2000 bits).
// It never reads an address no point asked for: a gap splits requests.
// Requests come out by table (coils, discrete inputs, input registers,
// holding registers), then address; locs[i] says where span i is found.
//
// Every span must fit in one request (count <= the table's limit).
func planReads(spans []span) (reqs []readRequest, locs []location) {
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
	cur := -1
	for _, i := range idx {
		s := spans[i]
		end := s.address + s.count
		if cur >= 0 {
			r := &reqs[cur]
			rend := r.address + r.count
			if r.table == s.table && s.address <= rend && max(rend, end)-r.address <= s.table.maxQuantity() {
				r.count = max(rend, end) - r.address
				locs[i] = location{req: cur, offset: s.address - r.address}
				continue
			}
		}
		reqs = append(reqs, readRequest{table: s.table, address: s.address, count: s.count})
		cur = len(reqs) - 1
		locs[i] = location{req: cur}
	}
	return reqs, locs
}
