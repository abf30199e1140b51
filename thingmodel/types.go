// Package thingmodel is the thing model of a product, as the cloud owns
// it: its measure points (identifier, data type, unit, whether it carries
// a quality, limits), attributes, events and services. ingestd stores the
// versions of each product's model and serves them; edged fetches the
// models of the products its devices use and normalises raw points into
// their measure points.
//
// The JSON form (what the HTTP API takes and thing/tsltemplate/get
// returns in its reply's data) is this package's Model, field for field.
package thingmodel

// DataType is the type of a measure point, attribute or parameter.
type DataType string

// The data types. int is a 64-bit integer; float and double are both
// carried as float64 (float is what most devices have, double marks
// points where the extra precision matters, e.g. energy counters); enum
// is an integer with named values (Enum); timestamp is milliseconds since
// the Unix epoch.
const (
	Int       DataType = "int"
	Float     DataType = "float"
	Double    DataType = "double"
	Bool      DataType = "bool"
	String    DataType = "string"
	Enum      DataType = "enum"
	Timestamp DataType = "timestamp"
)

// Model is one version of a product's thing model.
type Model struct {
	ProductKey string `json:"productKey"`
	// Version increases by one with every change the cloud accepts; a
	// gateway compares it to the version it runs.
	Version       uint64         `json:"version"`
	MeasurePoints []MeasurePoint `json:"measurepoints"`
	Attributes    []Attribute    `json:"attributes,omitempty"`
	Events        []Event        `json:"events,omitempty"`
	Services      []Service      `json:"services,omitempty"`
}

// MeasurePoint is a time series of the product.
type MeasurePoint struct {
	Identifier string   `json:"identifier"`
	Name       string   `json:"name,omitempty"`
	DataType   DataType `json:"dataType"`
	Unit       string   `json:"unit,omitempty"`
	// HasQuality: readings carry a quality (good, bad with a reason,
	// stale) besides the value.
	HasQuality bool `json:"hasQuality"`
	// Min and Max bound a numeric value (inclusive); a value outside is
	// reported with bad quality, never clamped.
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
	// Enum names the values of an enum point ("0": "off", "1": "on").
	Enum map[string]string `json:"enum,omitempty"`
}

// Attribute is a static property of a device (rated power, firmware).
type Attribute struct {
	Identifier string   `json:"identifier"`
	Name       string   `json:"name,omitempty"`
	DataType   DataType `json:"dataType"`
	Unit       string   `json:"unit,omitempty"`
}

// Param is an input or output of an event or a service.
type Param struct {
	Identifier string   `json:"identifier"`
	DataType   DataType `json:"dataType"`
	Unit       string   `json:"unit,omitempty"`
}

// Event is something a device reports (an alarm, a trip).
type Event struct {
	Identifier string  `json:"identifier"`
	Name       string  `json:"name,omitempty"`
	Outputs    []Param `json:"outputs,omitempty"`
}

// Service is a command a device executes.
type Service struct {
	Identifier string  `json:"identifier"`
	Name       string  `json:"name,omitempty"`
	Inputs     []Param `json:"inputs,omitempty"`
	Outputs    []Param `json:"outputs,omitempty"`
}

// MeasurePoint returns the measure point with identifier id.
func (m *Model) MeasurePoint(id string) (*MeasurePoint, bool) {
	for i := range m.MeasurePoints {
		if m.MeasurePoints[i].Identifier == id {
			return &m.MeasurePoints[i], true
		}
	}
	return nil, false
}
