package telemetry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// The bus body format: a compact binary encoding of a batch of records from
// one gateway and epoch. Sequence numbers are not stored: the bus assigns
// them (record i of a message is message.Seq + i).
//
//	version  u8 (= 1)
//	gateway  string
//	epoch    uvarint
//	count    uvarint
//	record*: device, productKey, deviceKey string; time varint;
//	         npoints uvarint; point*: id string, quality u8, reason string,
//	         kind u8, value (bool u8 | int varint | uint uvarint | float 8 bytes LE | string)
//
// string = uvarint length + bytes.
const codecVersion = 1

// Limits a decoder enforces so a corrupt body cannot make it allocate wildly.
const (
	maxRecords = 1 << 20
	maxPoints  = 1 << 16
	maxString  = 1 << 16
)

// ErrCorrupt is returned for a body that does not decode.
var ErrCorrupt = errors.New("telemetry: corrupt record batch")

// AppendBatch encodes recs (all from gateway at epoch) onto dst.
func AppendBatch(dst []byte, gateway string, epoch uint64, recs []Record) []byte {
	dst = append(dst, codecVersion)
	dst = appendString(dst, gateway)
	dst = binary.AppendUvarint(dst, epoch)
	dst = binary.AppendUvarint(dst, uint64(len(recs)))
	for i := range recs {
		r := &recs[i]
		dst = appendString(dst, r.Device)
		dst = appendString(dst, r.ProductKey)
		dst = appendString(dst, r.DeviceKey)
		dst = binary.AppendVarint(dst, r.Time)
		dst = binary.AppendUvarint(dst, uint64(len(r.Points)))
		for j := range r.Points {
			p := &r.Points[j]
			dst = appendString(dst, p.ID)
			dst = append(dst, byte(p.Quality))
			dst = appendString(dst, p.Reason)
			dst = append(dst, byte(p.Value.Kind))
			switch p.Value.Kind {
			case KindBool:
				if p.Value.B {
					dst = append(dst, 1)
				} else {
					dst = append(dst, 0)
				}
			case KindInt:
				dst = binary.AppendVarint(dst, p.Value.I)
			case KindUint:
				dst = binary.AppendUvarint(dst, p.Value.U)
			case KindFloat:
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(p.Value.F))
			case KindString:
				dst = appendString(dst, p.Value.S)
			}
		}
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeBatch decodes a body written by AppendBatch. Records get Gateway and
// Epoch from the batch header and Seq = firstSeq + index.
func DecodeBatch(b []byte, firstSeq uint64) ([]Record, error) {
	d := decoder{b: b}
	if v := d.byte(); v != codecVersion {
		if d.err != nil {
			return nil, d.err
		}
		return nil, fmt.Errorf("%w: version %d", ErrCorrupt, v)
	}
	gateway := d.string()
	epoch := d.uvarint()
	n := d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	if n > maxRecords || n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: %d records", ErrCorrupt, n)
	}
	recs := make([]Record, 0, n)
	for i := uint64(0); i < n; i++ {
		r := Record{Gateway: gateway, Epoch: epoch, Seq: firstSeq + i}
		r.Device = d.string()
		r.ProductKey = d.string()
		r.DeviceKey = d.string()
		r.Time = d.varint()
		np := d.uvarint()
		if d.err != nil {
			return nil, d.err
		}
		if np > maxPoints || np > uint64(len(d.b)) {
			return nil, fmt.Errorf("%w: %d points", ErrCorrupt, np)
		}
		r.Points = make([]Point, np)
		for j := range r.Points {
			p := &r.Points[j]
			p.ID = d.string()
			p.Quality = Quality(d.byte())
			p.Reason = d.string()
			p.Value.Kind = Kind(d.byte())
			switch p.Value.Kind {
			case KindNone:
			case KindBool:
				switch d.byte() {
				case 0:
				case 1:
					p.Value.B = true
				default:
					d.fail("bool")
				}
			case KindInt:
				p.Value.I = d.varint()
			case KindUint:
				p.Value.U = d.uvarint()
			case KindFloat:
				p.Value.F = math.Float64frombits(d.uint64le())
			case KindString:
				p.Value.S = d.string()
			default:
				d.fail("value kind")
			}
			if p.Quality > Stale {
				d.fail("quality")
			}
			if d.err != nil {
				return nil, d.err
			}
		}
		recs = append(recs, r)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	return recs, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", ErrCorrupt, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("length")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint64le() uint64 {
	if len(d.b) < 8 {
		d.fail("float")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxString || n > uint64(len(d.b)) {
		d.fail("string length")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
