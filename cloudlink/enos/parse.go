package enos

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/edged/edged/telemetry"
)

// Sentinel errors of the parsers. Every parse error is an *Error that
// matches ErrMalformed, or ErrLimit when a configured limit was exceeded.
var (
	ErrMalformed = errors.New("malformed payload")
	ErrLimit     = errors.New("payload exceeds a limit")
)

// Error is a payload the parser refused: where (a path such as
// `params[3].measurepoints."voltage"` and the byte offset) and why.
type Error struct {
	Path   string
	Offset int
	Msg    string
	Limit  bool // a limit (Limits) was exceeded, not a syntax or type error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("enos: ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	b.WriteString(" (at byte ")
	b.WriteString(strconv.Itoa(e.Offset))
	b.WriteString(")")
	return b.String()
}

// Is makes errors.Is(err, ErrMalformed) and errors.Is(err, ErrLimit) work.
func (e *Error) Is(target error) bool {
	if e.Limit {
		return target == ErrLimit
	}
	return target == ErrMalformed
}

// in prefixes the error's path with seg.
func (e *Error) in(seg string) *Error {
	if e == nil {
		return nil
	}
	switch {
	case e.Path == "":
		e.Path = seg
	case e.Path[0] == '[':
		e.Path = seg + e.Path
	default:
		e.Path = seg + "." + e.Path
	}
	return e
}

// Limits bounds what the parsers accept beyond the payload size (which the
// transport bounds). Zero fields take the defaults of DefaultLimits.
type Limits struct {
	MaxItems  int // items in one batch
	MaxPoints int // measure points in one item
	MaxIDLen  int // bytes of the request id
}

// DefaultLimits are the limits of ParsePostBatch and ParsePost.
var DefaultLimits = Limits{MaxItems: 10000, MaxPoints: 10000, MaxIDLen: 64}

func (l Limits) orDefault() Limits {
	if l.MaxItems <= 0 {
		l.MaxItems = DefaultLimits.MaxItems
	}
	if l.MaxPoints <= 0 {
		l.MaxPoints = DefaultLimits.MaxPoints
	}
	if l.MaxIDLen <= 0 {
		l.MaxIDLen = DefaultLimits.MaxIDLen
	}
	return l
}

// Sender is the top-level "edged" object of a post: the gateway that sent it
// and its epoch at the time (the fencing token).
type Sender struct {
	Gateway string
	Epoch   uint64
}

// Origin is an item's "edged" object: the epoch of the node that produced
// the record and the record's sequence. With the sender's gateway id it is
// the de-duplication key.
type Origin struct {
	Epoch uint64
	Seq   uint64
}

// MeasurePoint is one measure point of an item as posted.
type MeasurePoint struct {
	ID string
	// Value is the point's value: KindNone for null or when Array is set.
	// JSON numbers become KindInt when integral and within int64, KindUint
	// above that, KindFloat otherwise; strings stay strings (the SDKs send
	// numbers and booleans as strings at times: coercion needs the model).
	Value telemetry.Value
	// Array is non-nil for an array measure point (e.g. "branchCurr":
	// ["1.02","2.02"]).
	Array []telemetry.Value
	// Quality is the EnOS quality code: 0 (or absent) good; edged sends 1
	// for bad and 2 for stale, other devices may send their own codes.
	Quality int
	Reason  string
}

// TelemetryQuality maps Quality to telemetry's qualities; ok is false for
// codes other than 0, 1, 2.
func (p MeasurePoint) TelemetryQuality() (q telemetry.Quality, ok bool) {
	if p.Quality < 0 || p.Quality > int(telemetry.Stale) {
		return 0, false
	}
	return telemetry.Quality(p.Quality), true
}

// Item is the measure points of one device at one time.
type Item struct {
	// ProductKey and DeviceKey name the device; both empty means the device
	// of the topic (the gateway itself in a batch).
	ProductKey string
	DeviceKey  string
	Points     []MeasurePoint
	Time       int64   // unix milliseconds; 0 when the device sent none
	Origin     *Origin // nil for a plain EnOS device
}

// PostBatch is a thing.measurepoint.post.batch (or resume.batch) request.
type PostBatch struct {
	ID      string
	Version string
	Method  string // as sent; empty if absent
	Items   []Item
	Sender  *Sender // nil for a plain EnOS device

	// Flags the SDKs send, often as empty strings; "" reads as false.
	AllowOfflineSubDevice    bool
	SkipInvalidMeasurepoints bool
}

// Post is a single-device thing.measurepoint.post (or resume) request.
type Post struct {
	ID      string
	Version string
	Method  string
	Item    Item
	Sender  *Sender
}

// ParsePostBatch parses a batch post with DefaultLimits.
func ParsePostBatch(payload []byte) (*PostBatch, error) {
	return DefaultLimits.ParsePostBatch(payload)
}

// ParsePost parses a single-device post with DefaultLimits.
func ParsePost(payload []byte) (*Post, error) {
	return DefaultLimits.ParsePost(payload)
}

// ParsePostBatch parses a thing.measurepoint.post.batch or
// thing.measurepoint.resume.batch request. It is loose where the SDKs are
// (numbers and booleans as strings, time as a string or number, extra
// top-level and item keys, which are skipped) and strict elsewhere: the
// error (an *Error) says where the payload went wrong.
func (l Limits) ParsePostBatch(payload []byte) (*PostBatch, error) {
	l = l.orDefault()
	pb := &PostBatch{}
	env := envelope{methods: batchMethods}
	p := parser{s: scanner{b: payload}, lim: l}
	err := p.envelope(&env, func() *Error {
		if p.s.peek() != '[' {
			return p.s.errf("want an array of items, got " + p.s.what())
		}
		if n := countHint(payload[p.s.i:]); n > 0 {
			pb.Items = make([]Item, 0, min(n, l.MaxItems))
		}
		return p.s.array(func(i int) *Error {
			if i >= l.MaxItems {
				e := p.s.errf("more than " + strconv.Itoa(l.MaxItems) + " items")
				e.Limit = true
				return e
			}
			pb.Items = append(pb.Items, Item{})
			if err := p.item(&pb.Items[i]); err != nil {
				return err.in("[" + strconv.Itoa(i) + "]")
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	pb.ID, pb.Version, pb.Method, pb.Sender = env.id, env.version, env.method, env.sender
	pb.AllowOfflineSubDevice, pb.SkipInvalidMeasurepoints = env.allowOffline, env.skipInvalid
	if pb.Sender == nil {
		for i := range pb.Items {
			if pb.Items[i].Origin != nil {
				return nil, &Error{Path: "params[" + strconv.Itoa(i) + "].edged", Msg: "an item's edged fields need the top-level edged object (gateway, epoch)"}
			}
		}
	}
	return pb, nil
}

// ParsePost parses a thing.measurepoint.post or thing.measurepoint.resume
// request, with the same rules as ParsePostBatch.
func (l Limits) ParsePost(payload []byte) (*Post, error) {
	l = l.orDefault()
	post := &Post{}
	env := envelope{methods: singleMethods}
	p := parser{s: scanner{b: payload}, lim: l}
	err := p.envelope(&env, func() *Error { return p.item(&post.Item) })
	if err != nil {
		return nil, err
	}
	post.ID, post.Version, post.Method, post.Sender = env.id, env.version, env.method, env.sender
	if post.Sender == nil && post.Item.Origin != nil {
		return nil, &Error{Path: "params.edged", Msg: "an item's edged fields need the top-level edged object (gateway, epoch)"}
	}
	return post, nil
}

var (
	batchMethods  = []string{MethodPostBatch, MethodResumeBatch}
	singleMethods = []string{MethodPost, MethodResume}
)

// countHint guesses the number of items of the array at the start of b by
// counting `"measurepoints"` keys; it only sizes an allocation.
func countHint(b []byte) int {
	if len(b) > 1<<20 {
		b = b[:1<<20]
	}
	return bytes.Count(b, []byte(`"measurepoints"`))
}

type parser struct {
	s          scanner
	lim        Limits
	intern     map[string]string // measure point ids and device keys, repeated across items
	lastPoints int               // points of the previous item: the next one likely has as many
}

type envelope struct {
	methods      []string
	id           string
	version      string
	method       string
	sender       *Sender
	allowOffline bool
	skipInvalid  bool
}

// envelope parses the request object; params is called on the params value.
func (p *parser) envelope(env *envelope, params func() *Error) error {
	var seen uint8
	const (
		sID = 1 << iota
		sVersion
		sMethod
		sParams
		sEdged
	)
	once := func(bit uint8) *Error {
		if seen&bit != 0 {
			return p.s.errf("duplicate key")
		}
		seen |= bit
		return nil
	}
	err := p.s.object(func(key []byte) *Error {
		switch string(key) {
		case "id":
			if err := once(sID); err != nil {
				return err.in("id")
			}
			id, err := p.idValue()
			if err != nil {
				return err.in("id")
			}
			env.id = id
		case "version":
			if err := once(sVersion); err != nil {
				return err.in("version")
			}
			v, err := p.s.str()
			if err != nil {
				return err.in("version")
			}
			env.version = v
		case "method":
			if err := once(sMethod); err != nil {
				return err.in("method")
			}
			start := p.s.i
			m, err := p.s.str()
			if err != nil {
				return err.in("method")
			}
			ok := false
			for _, want := range env.methods {
				ok = ok || m == want
			}
			if !ok {
				return (&Error{Offset: start, Msg: strconv.Quote(m) + " is not " + strings.Join(env.methods, " or ")}).in("method")
			}
			env.method = m
		case "params":
			if err := once(sParams); err != nil {
				return err.in("params")
			}
			return params().in("params")
		case "edged":
			if err := once(sEdged); err != nil {
				return err.in("edged")
			}
			snd, err := p.sender()
			if err != nil {
				return err.in("edged")
			}
			env.sender = snd
		case "allowOfflineSubDevice":
			b, err := p.looseBool()
			if err != nil {
				return err.in("allowOfflineSubDevice")
			}
			env.allowOffline = b
		case "skipInvalidMeasurepoints":
			b, err := p.looseBool()
			if err != nil {
				return err.in("skipInvalidMeasurepoints")
			}
			env.skipInvalid = b
		default:
			if _, err := p.s.skip(); err != nil {
				return err.in(strconv.Quote(string(key)))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := p.s.end(); err != nil {
		return err
	}
	if seen&sID == 0 || env.id == "" {
		return &Error{Path: "id", Offset: p.s.i, Msg: "a request id is required"}
	}
	if seen&sParams == 0 {
		return &Error{Path: "params", Offset: p.s.i, Msg: "params is required"}
	}
	return nil
}

// idValue reads a request id: a string, or a number (kept as its text).
func (p *parser) idValue() (string, *Error) {
	start := p.s.i
	var id string
	if c := p.s.peek(); c == '"' {
		v, err := p.s.str()
		if err != nil {
			return "", err
		}
		id = v
	} else {
		t, isInt, err := p.s.number()
		if err != nil || !isInt {
			return "", &Error{Offset: start, Msg: "want a string or an integer"}
		}
		id = string(t)
	}
	if len(id) > p.lim.MaxIDLen {
		return "", &Error{Offset: start, Msg: "id longer than " + strconv.Itoa(p.lim.MaxIDLen) + " bytes", Limit: true}
	}
	return id, nil
}

func (p *parser) sender() (*Sender, *Error) {
	snd := &Sender{}
	var hasGW, hasEpoch bool
	start := p.s.i
	err := p.s.object(func(key []byte) *Error {
		switch string(key) {
		case "gateway":
			v, err := p.s.str()
			if err != nil {
				return err.in("gateway")
			}
			snd.Gateway, hasGW = v, true
		case "epoch":
			v, err := p.uint()
			if err != nil {
				return err.in("epoch")
			}
			snd.Epoch, hasEpoch = v, true
		default:
			if _, err := p.s.skip(); err != nil {
				return err.in(strconv.Quote(string(key)))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !hasGW || snd.Gateway == "" || !hasEpoch {
		return nil, &Error{Offset: start, Msg: "edged needs a non-empty gateway and an epoch"}
	}
	return snd, nil
}

func (p *parser) origin() (*Origin, *Error) {
	o := &Origin{}
	var hasEpoch, hasSeq bool
	start := p.s.i
	err := p.s.object(func(key []byte) *Error {
		switch string(key) {
		case "epoch":
			v, err := p.uint()
			if err != nil {
				return err.in("epoch")
			}
			o.Epoch, hasEpoch = v, true
		case "seq":
			v, err := p.uint()
			if err != nil {
				return err.in("seq")
			}
			o.Seq, hasSeq = v, true
		default:
			if _, err := p.s.skip(); err != nil {
				return err.in(strconv.Quote(string(key)))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !hasEpoch || !hasSeq {
		return nil, &Error{Offset: start, Msg: "edged needs epoch and seq"}
	}
	return o, nil
}

// uint reads a non-negative integer (our own fields: strict, no strings).
func (p *parser) uint() (uint64, *Error) {
	start := p.s.i
	t, isInt, err := p.s.number()
	if err != nil {
		return 0, err
	}
	v, perr := strconv.ParseUint(string(t), 10, 64)
	if !isInt || perr != nil {
		return 0, &Error{Offset: start, Msg: "want an unsigned 64-bit integer, got " + string(t)}
	}
	return v, nil
}

// looseBool reads true/false, or the strings "", "true", "false", "1", "0"
// (any case), or the numbers 0 and 1.
func (p *parser) looseBool() (bool, *Error) {
	start := p.s.i
	switch p.s.peek() {
	case 't', 'f':
		if p.s.literal("true") {
			return true, nil
		}
		if p.s.literal("false") {
			return false, nil
		}
	case '"':
		v, err := p.s.rawString()
		if err != nil {
			return false, err
		}
		switch strings.ToLower(string(v)) {
		case "", "false", "0":
			return false, nil
		case "true", "1":
			return true, nil
		}
	case 'n':
		if p.s.literal("null") {
			return false, nil
		}
	default:
		t, _, err := p.s.number()
		if err == nil && (string(t) == "0" || string(t) == "1") {
			return string(t) == "1", nil
		}
	}
	return false, &Error{Offset: start, Msg: "want a bool"}
}

func (p *parser) item(it *Item) *Error {
	if p.s.peek() != '{' {
		return p.s.errf("want an object, got " + p.s.what())
	}
	var hasPoints bool
	start := p.s.i
	err := p.s.object(func(key []byte) *Error {
		switch string(key) {
		case "productKey":
			v, err := p.looseKey()
			if err != nil {
				return err.in("productKey")
			}
			it.ProductKey = v
		case "deviceKey":
			v, err := p.looseKey()
			if err != nil {
				return err.in("deviceKey")
			}
			it.DeviceKey = v
		case "measurepoints":
			if hasPoints {
				return p.s.errf("duplicate key").in("measurepoints")
			}
			hasPoints = true
			return p.points(it).in("measurepoints")
		case "time":
			t, err := p.time()
			if err != nil {
				return err.in("time")
			}
			it.Time = t
		case "edged":
			o, err := p.origin()
			if err != nil {
				return err.in("edged")
			}
			it.Origin = o
		default:
			if _, err := p.s.skip(); err != nil {
				return err.in(strconv.Quote(string(key)))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !hasPoints {
		return &Error{Offset: start, Msg: "measurepoints is required"}
	}
	if (it.ProductKey == "") != (it.DeviceKey == "") {
		return &Error{Offset: start, Msg: "productKey and deviceKey go together: give both, or neither for the device of the topic"}
	}
	return nil
}

// looseKey reads a product or device key: a string, or null for "".
// Keys repeat across a batch's items, so they are interned.
func (p *parser) looseKey() (string, *Error) {
	if p.s.peek() == 'n' && p.s.literal("null") {
		return "", nil
	}
	b, err := p.s.rawString()
	if err != nil {
		return "", err
	}
	return p.internID(b), nil
}

// time reads a unix millisecond time: a number or a string holding one; a
// fraction is dropped; "" and null read as absent (0).
func (p *parser) time() (int64, *Error) {
	start := p.s.i
	var t []byte
	switch p.s.peek() {
	case '"':
		v, err := p.s.rawString()
		if err != nil {
			return 0, err
		}
		t = []byte(strings.TrimSpace(string(v)))
		if len(t) == 0 {
			return 0, nil
		}
		if n, _ := numberLen(t); n != len(t) {
			return 0, &Error{Offset: start, Msg: "want a unix millisecond time, got " + strconv.Quote(string(v))}
		}
	case 'n':
		if p.s.literal("null") {
			return 0, nil
		}
		return 0, p.s.errf("want a time")
	default:
		v, _, err := p.s.number()
		if err != nil {
			return 0, err
		}
		t = v
	}
	if v, err := strconv.ParseInt(string(t), 10, 64); err == nil && v >= 0 {
		return v, nil
	}
	f, err := strconv.ParseFloat(string(t), 64)
	if err != nil || f < 0 || f >= 1<<63 || math.IsNaN(f) {
		return 0, &Error{Offset: start, Msg: "time " + string(t) + " out of range"}
	}
	return int64(f), nil
}

func (p *parser) points(it *Item) *Error {
	if p.s.peek() != '{' {
		return p.s.errf("want an object, got " + p.s.what())
	}
	if it.Points == nil {
		it.Points = make([]MeasurePoint, 0, max(p.lastPoints, 4))
	}
	defer func() { p.lastPoints = len(it.Points) }()
	return p.s.object(func(key []byte) *Error {
		if len(it.Points) >= p.lim.MaxPoints {
			e := p.s.errf("more than " + strconv.Itoa(p.lim.MaxPoints) + " measure points")
			e.Limit = true
			return e
		}
		if len(key) == 0 {
			return p.s.errf("empty measure point id")
		}
		it.Points = append(it.Points, MeasurePoint{ID: p.internID(key)})
		mp := &it.Points[len(it.Points)-1]
		if err := p.point(mp); err != nil {
			return err.in(strconv.Quote(mp.ID))
		}
		return nil
	})
}

// internID returns key as a string, shared with earlier equal ones (a bounded
// table per payload).
func (p *parser) internID(key []byte) string {
	if id, ok := p.intern[string(key)]; ok {
		return id
	}
	if p.intern == nil {
		p.intern = make(map[string]string, 16)
	}
	id := string(key)
	if len(p.intern) < 4096 {
		p.intern[id] = id
	}
	return id
}

// point reads a measure point: a scalar, an array of scalars, or the
// object form {"value": v, "quality": q, "reason": "..."}.
func (p *parser) point(mp *MeasurePoint) *Error {
	switch p.s.peek() {
	case '{':
		var hasValue bool
		start := p.s.i
		err := p.s.object(func(key []byte) *Error {
			switch string(key) {
			case "value":
				hasValue = true
				return p.valueOrArray(mp).in("value")
			case "quality":
				q, err := p.quality()
				if err != nil {
					return err.in("quality")
				}
				mp.Quality = q
			case "reason":
				if p.s.peek() == 'n' && p.s.literal("null") {
					return nil
				}
				r, err := p.s.rawString()
				if err != nil {
					return err.in("reason")
				}
				mp.Reason = p.internID(r) // reasons repeat ("timeout")
			default:
				return p.s.errf("unknown key " + strconv.Quote(string(key)) + " in a measure point object (want value, quality, reason; struct measure points are not supported)")
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !hasValue {
			return &Error{Offset: start, Msg: "a measure point object needs a value"}
		}
		return nil
	default:
		return p.valueOrArray(mp)
	}
}

func (p *parser) valueOrArray(mp *MeasurePoint) *Error {
	if p.s.peek() != '[' {
		v, err := p.scalar()
		mp.Value = v
		return err
	}
	mp.Array = make([]telemetry.Value, 0, 4)
	return p.s.array(func(i int) *Error {
		v, err := p.scalar()
		if err != nil {
			return err.in("[" + strconv.Itoa(i) + "]")
		}
		mp.Array = append(mp.Array, v)
		return nil
	})
}

// scalar reads a JSON scalar into a Value.
func (p *parser) scalar() (telemetry.Value, *Error) {
	switch c := p.s.peek(); c {
	case '"':
		s, err := p.s.str()
		return telemetry.String(s), err
	case 't', 'f':
		if p.s.literal("true") {
			return telemetry.Bool(true), nil
		}
		if p.s.literal("false") {
			return telemetry.Bool(false), nil
		}
		return telemetry.Value{}, p.s.errf("bad literal")
	case 'n':
		if p.s.literal("null") {
			return telemetry.Value{}, nil
		}
		return telemetry.Value{}, p.s.errf("bad literal")
	case '{', '[':
		return telemetry.Value{}, p.s.errf("want a number, string, bool or null, got " + p.s.what())
	default:
		start := p.s.i
		t, isInt, err := p.s.number()
		if err != nil {
			return telemetry.Value{}, err
		}
		if v, ok := parseNumber(t, isInt); ok {
			return v, nil
		}
		return telemetry.Value{}, &Error{Offset: start, Msg: "number " + string(t) + " out of range"}
	}
}

// parseNumber turns JSON number text into an Int, a Uint (integers above
// int64) or a Float.
func parseNumber(t []byte, isInt bool) (telemetry.Value, bool) {
	if isInt {
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return telemetry.Int(i), true
		}
		if u, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			return telemetry.Uint(u), true
		}
	}
	f, err := strconv.ParseFloat(string(t), 64)
	if err != nil { // out of float64 range
		return telemetry.Value{}, false
	}
	return telemetry.Float(f), true
}

// quality reads a quality code: an integer, or a string holding one.
func (p *parser) quality() (int, *Error) {
	start := p.s.i
	var t []byte
	if p.s.peek() == '"' {
		v, err := p.s.rawString()
		if err != nil {
			return 0, err
		}
		t = v
	} else {
		v, _, err := p.s.number()
		if err != nil {
			return 0, err
		}
		t = v
	}
	q, err := strconv.ParseInt(strings.TrimSpace(string(t)), 10, 32)
	if err != nil {
		return 0, &Error{Offset: start, Msg: "want an integer quality, got " + strconv.Quote(string(t))}
	}
	return int(q), nil
}

// PeekID returns the request id of a payload without parsing the rest, so
// that even a malformed or oversized request can be answered. It reads the
// top-level object up to the id and gives up at the first error.
func PeekID(payload []byte) (string, bool) {
	p := parser{s: scanner{b: payload}, lim: Limits{MaxIDLen: 256}}
	var id string
	var found bool
	stop := &Error{}
	_ = p.s.object(func(key []byte) *Error {
		if string(key) == "id" {
			v, err := p.idValue()
			if err != nil {
				return err
			}
			id, found = v, true
			return stop
		}
		_, err := p.s.skip()
		return err
	})
	return id, found
}
