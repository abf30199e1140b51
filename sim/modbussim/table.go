package modbussim

import (
	"sort"
	"sync"
	"time"
)

// tableKind is one of the four Modbus tables.
type tableKind uint8

const (
	tableCoils tableKind = iota
	tableDiscrete
	tableInput
	tableHolding
)

// unit is one unit id's register map.
type unit struct {
	id     uint8
	tables [4]*table // by tableKind
}

// table is one Modbus table of one unit: its signals sorted by address. The
// slots slice is fixed after New; mu guards the slots' state (frozen values,
// random walks) so that a multi-register read or write is atomic.
type table struct {
	kind  tableKind
	mu    sync.Mutex
	slots []slot
}

// slot is one signal at one address.
type slot struct {
	addr   int32
	width  uint8 // registers, or 1 for a bit
	typ    valueType
	frozen bool // written by a client: words holds the value
	perm   perm
	words  [4]uint16 // a bit is words[0] != 0
	scale  float64
	offset float64
	gen    generator
	src    int32 // configuration source, for messages while compiling
}

// current writes the slot's registers (or bit, as 0/1) at time el into w.
func (s *slot) current(el time.Duration, w []uint16) {
	if s.frozen {
		copy(w, s.words[:s.width])
		return
	}
	v := s.gen.value(el)
	if s.typ == typeBool {
		w[0] = 0
		if v != 0 {
			w[0] = 1
		}
		return
	}
	encode(s.typ, &s.perm, (v-s.offset)/s.scale, w)
}

// freeze fixes the slot at its current value, so that a client's write of
// some of its registers leaves the others as they were read.
func (s *slot) freeze(el time.Duration) {
	if !s.frozen {
		s.current(el, s.words[:])
		s.frozen = true
	}
}

// find returns the index of the first slot that ends after addr.
func (t *table) find(addr int) int {
	return sort.Search(len(t.slots), func(i int) bool {
		return int(t.slots[i].addr)+int(t.slots[i].width) > addr
	})
}

// covers reports whether every address in [start, start+n) belongs to a
// signal. It reads only the immutable layout, so it takes no lock.
func (t *table) covers(start, n int) bool {
	end := start + n
	for i, a := t.find(start), start; a < end; i++ {
		if i >= len(t.slots) || int(t.slots[i].addr) > a {
			return false
		}
		a = int(t.slots[i].addr) + int(t.slots[i].width)
	}
	return true
}

// span calls f for each slot overlapping [start, end) with the overlap's
// bounds. The caller holds t.mu and has checked covers.
func (t *table) span(start, end int, f func(s *slot, from, to int)) {
	for i := t.find(start); i < len(t.slots) && int(t.slots[i].addr) < end; i++ {
		s := &t.slots[i]
		from, to := max(int(s.addr), start), min(int(s.addr)+int(s.width), end)
		f(s, from, to)
	}
}

// readRegisters puts n registers from start, big-endian, into out.
func (t *table) readRegisters(el time.Duration, start, n int, out []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.span(start, start+n, func(s *slot, from, to int) {
		var w [4]uint16
		s.current(el, w[:])
		for a := from; a < to; a++ {
			v := w[a-int(s.addr)]
			o := 2 * (a - start)
			out[o], out[o+1] = byte(v>>8), byte(v)
		}
	})
}

// readBits packs n bits from start into out (zeroed, (n+7)/8 bytes), the
// first in the low bit of out[0].
func (t *table) readBits(el time.Duration, start, n int, out []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.span(start, start+n, func(s *slot, from, _ int) {
		var w [4]uint16
		s.current(el, w[:])
		if w[0] != 0 {
			i := from - start
			out[i/8] |= 1 << (i % 8)
		}
	})
}

// writeRegisters stores big-endian registers from data at start.
func (t *table) writeRegisters(el time.Duration, start int, data []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.span(start, start+len(data)/2, func(s *slot, from, to int) {
		s.freeze(el)
		for a := from; a < to; a++ {
			o := 2 * (a - start)
			s.words[a-int(s.addr)] = uint16(data[o])<<8 | uint16(data[o+1])
		}
	})
}

// writeBits stores n bits packed as in readBits at start.
func (t *table) writeBits(el time.Duration, start, n int, packed []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.span(start, start+n, func(s *slot, from, _ int) {
		s.freeze(el)
		i := from - start
		s.words[0] = uint16(packed[i/8]>>(i%8)) & 1
	})
}
