package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/edged/edged/cloudlink/enos"
	"github.com/edged/edged/telemetry"
)

// Store is where accepted posts go. Implementations: the embedded bbolt
// store (OpenBoltStore); the conformance suite in ingest/storetest runs
// against each. All methods are safe for concurrent use; ctx bounds each
// call (the embedded store, being local, does not block on it).
type Store interface {
	// Append stores a whole post atomically and durably (the data is on
	// disk when it returns nil). Items whose (b.Gateway, Origin.Epoch,
	// Origin.Seq) is already stored are skipped and counted as duplicates;
	// items without an Origin, or any item of a batch without a Gateway,
	// are stored without de-duplication. If b.Gateway has been seen with a
	// sender epoch newer than b.Epoch, nothing is stored and the error is a
	// *FencedError (errors.Is(err, ErrFenced)); otherwise b.Epoch becomes
	// the gateway's newest epoch if it is newer.
	//
	// A reading is identified by (device, measure point, time, sequence):
	// storing the same again (a plain device re-sending) replaces it.
	// Every item must name its device (ProductKey, DeviceKey) and carry a
	// Time: the server fills in the topic's device and the arrival time.
	// Names containing NUL are refused.
	Append(ctx context.Context, b *Batch) (AppendResult, error)

	// Latest returns the newest reading of each measure point of a device
	// (newest by time, then sequence); an empty map for a device with no
	// data.
	Latest(ctx context.Context, productKey, deviceKey string) (map[string]Reading, error)

	// Range returns the readings of one measure point with from <= time <
	// to, oldest first, at most limit of them (limit <= 0 means 1000).
	// Page.Next, when not empty, is the cursor of the next page: pass it
	// back with the same from and to. A cursor this store did not make is
	// an error wrapping ErrBadCursor.
	Range(ctx context.Context, productKey, deviceKey, point string, from, to int64, cursor string, limit int) (Page, error)

	// Sequences summarises which sequences of a gateway are stored, per
	// origin epoch, as ranges: gaps show what never arrived. ErrNotFound
	// when the gateway never posted with edged fields.
	Sequences(ctx context.Context, gateway string) (Sequences, error)

	// AppendEvent stores a device event durably. An event is identified by
	// (device, Name, Time, ID): storing the same again (a device sending
	// its QoS 1 request again) replaces it. Names and ids containing NUL
	// are refused; Values must be a JSON object.
	AppendEvent(ctx context.Context, e Event) error

	// Events returns the events of a device with from <= time < to,
	// oldest first (then by name and id), paged like Range.
	Events(ctx context.Context, productKey, deviceKey string, from, to int64, cursor string, limit int) (EventPage, error)

	// SetAttributes stores a device's attribute values durably, each
	// replacing the attribute's previous value, all or none. Values must
	// be valid JSON; names containing NUL are refused.
	SetAttributes(ctx context.Context, productKey, deviceKey string, attrs map[string]json.RawMessage, at int64) error

	// Attributes returns a device's attributes (an empty map for none).
	Attributes(ctx context.Context, productKey, deviceKey string) (map[string]Attribute, error)

	// Ping reports whether the store can serve.
	Ping(ctx context.Context) error

	// Close releases the store; no call may follow.
	Close() error
}

// Errors of a Store.
var (
	ErrFenced    = errors.New("fenced")
	ErrNotFound  = errors.New("not found")
	ErrBadCursor = errors.New("bad cursor")
)

// FencedError is a post from an epoch older than the newest the gateway
// has posted with: a node that lost leadership is still sending.
type FencedError struct {
	Gateway string
	Epoch   uint64 // the post's sender epoch
	Newest  uint64 // the newest seen
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("gateway %q: epoch %d is older than epoch %d, already seen", e.Gateway, e.Epoch, e.Newest)
}

func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// Batch is one accepted post, ready to store.
type Batch struct {
	// Gateway scopes de-duplication and fencing (the post's edged.gateway);
	// empty for a plain EnOS device.
	Gateway string
	Epoch   uint64 // the sender's epoch: the fencing token
	// Items name their device and carry a time (see Store.Append).
	Items []enos.Item
}

// AppendResult counts what Append did.
type AppendResult struct {
	Stored     int // items stored
	Duplicates int // items skipped as already stored
	Points     int // measure points stored
}

// Reading is one stored value of a measure point.
type Reading struct {
	Time    int64             // unix milliseconds
	Seq     uint64            // the record's sequence; 0 for a plain device
	Value   telemetry.Value   // KindNone for null or an array
	Array   []telemetry.Value // non-nil for an array measure point
	Quality int               // EnOS quality code: 0 good; edged's 1 bad, 2 stale
	Reason  string
}

// MarshalJSON writes
// {"time":...,"seq":...,"value":...,"quality":"good","qualityCode":0,"reason":...},
// leaving out a zero seq and an empty reason. quality names edged's codes
// (good, bad, stale) and gives any other device's code as a decimal
// string; qualityCode is the number. Values are written as the uplink
// writes them (floats keep a '.', so 230.0 stays a float).
func (r Reading) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 64)
	b = append(b, `{"time":`...)
	b = strconv.AppendInt(b, r.Time, 10)
	if r.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
	}
	b = append(b, `,"value":`...)
	if r.Array != nil {
		b = append(b, '[')
		for i, v := range r.Array {
			if i > 0 {
				b = append(b, ',')
			}
			b = enos.AppendValue(b, v)
		}
		b = append(b, ']')
	} else {
		b = enos.AppendValue(b, r.Value)
	}
	b = append(b, `,"quality":"`...)
	if r.Quality >= 0 && r.Quality <= int(telemetry.Stale) {
		b = append(b, telemetry.Quality(r.Quality).String()...)
	} else {
		b = strconv.AppendInt(b, int64(r.Quality), 10)
	}
	b = append(b, `","qualityCode":`...)
	b = strconv.AppendInt(b, int64(r.Quality), 10)
	if r.Reason != "" {
		b = append(b, `,"reason":`...)
		b = telemetry.AppendJSONString(b, r.Reason)
	}
	return append(b, '}'), nil
}

// Page is one page of a Range.
type Page struct {
	Readings []Reading
	Next     string // cursor of the next page; empty on the last
}

// Event is one device event (thing/event/{name}/post).
type Event struct {
	ProductKey string          `json:"productKey"`
	DeviceKey  string          `json:"deviceKey"`
	Name       string          `json:"event"`  // the event's identifier, from the topic
	Time       int64           `json:"time"`   // unix ms: the device's, or the arrival time
	ID         string          `json:"id"`     // the request id
	Values     json.RawMessage `json:"values"` // the output parameters: a JSON object
}

// EventPage is one page of Events.
type EventPage struct {
	Events []Event
	Next   string // cursor of the next page; empty on the last
}

// Attribute is the stored value of a device attribute.
type Attribute struct {
	Value json.RawMessage `json:"value"`
	Time  int64           `json:"time"` // unix ms of the update that set it
}

// Sequences is what a gateway has stored, per origin epoch.
type Sequences struct {
	Gateway string `json:"gateway"`
	Epoch   uint64 `json:"epoch"` // the newest sender epoch seen (the fence)
	Total   uint64 `json:"total"` // records stored with edged fields
	// Duplicates counts the records acknowledged but not stored again
	// because they already were.
	Duplicates uint64       `json:"duplicates"`
	Epochs     []EpochRange `json:"epochs"`
}

// EpochRange lists the stored sequences of one origin epoch as closed
// ranges [first, last], ascending; a gap between two ranges is missing data.
type EpochRange struct {
	Epoch  uint64      `json:"epoch"`
	Count  uint64      `json:"count"`
	Ranges [][2]uint64 `json:"ranges"`
}

var _ json.Marshaler = Reading{}
