package modelsync

import "strings"

// unit is a unit of a dimension: base = value × factor + offset.
type unit struct {
	dim            string
	factor, offset float64
}

// units are the units the normaliser converts between, by the names
// engineers write (a few spellings of each).
var units = func() map[string]unit {
	m := map[string]unit{}
	add := func(dim string, factor, offset float64, names ...string) {
		for _, n := range names {
			m[n] = unit{dim, factor, offset}
		}
	}
	add("voltage", 1e-3, 0, "mV")
	add("voltage", 1, 0, "V")
	add("voltage", 1e3, 0, "kV")
	add("current", 1e-3, 0, "mA")
	add("current", 1, 0, "A")
	add("current", 1e3, 0, "kA")
	add("power", 1, 0, "W")
	add("power", 1e3, 0, "kW")
	add("power", 1e6, 0, "MW")
	add("power", 1e9, 0, "GW")
	add("energy", 1, 0, "Wh")
	add("energy", 1e3, 0, "kWh")
	add("energy", 1e6, 0, "MWh")
	add("energy", 1e9, 0, "GWh")
	add("apparent power", 1, 0, "VA")
	add("apparent power", 1e3, 0, "kVA")
	add("apparent power", 1e6, 0, "MVA")
	add("reactive power", 1, 0, "var", "VAr", "VAR")
	add("reactive power", 1e3, 0, "kvar", "kVAr", "kVar", "kVAR")
	add("reactive power", 1e6, 0, "Mvar", "MVAr", "MVar", "MVAR")
	add("reactive energy", 1, 0, "varh", "VArh")
	add("reactive energy", 1e3, 0, "kvarh", "kVArh", "kVarh")
	add("reactive energy", 1e6, 0, "Mvarh", "MVArh", "MVarh")
	add("frequency", 1, 0, "Hz")
	add("frequency", 1e3, 0, "kHz")
	add("temperature", 1, 0, "°C", "℃", "degC", "C")
	add("temperature", 1, -273.15, "K")
	add("temperature", 5.0/9, -32*5.0/9, "°F", "℉", "degF", "F")
	add("pressure", 1, 0, "Pa")
	add("pressure", 1e2, 0, "hPa", "mbar")
	add("pressure", 1e3, 0, "kPa")
	add("pressure", 1e6, 0, "MPa")
	add("pressure", 1e5, 0, "bar")
	add("flow", 1, 0, "m3/s", "m³/s")
	add("flow", 1.0/3600, 0, "m3/h", "m³/h")
	add("flow", 1e-3, 0, "l/s", "L/s")
	add("flow", 1e-3/60, 0, "l/min", "L/min")
	add("ratio", 1, 0, "%")
	add("time", 1e-3, 0, "ms")
	add("time", 1, 0, "s")
	add("time", 60, 0, "min")
	add("time", 3600, 0, "h")
	return m
}()

// conversion is model value = profile value × a + b.
type conversion struct{ a, b float64 }

func (c conversion) identity() bool { return c.a == 1 && c.b == 0 }

// convertUnit returns the conversion from unit from (the profile's) to
// unit to (the model's). No unit on either side, or the same unit, is the
// identity; ok is false for units of different dimensions or unknown ones.
func convertUnit(from, to string) (conversion, bool) {
	from, to = strings.TrimSpace(from), strings.TrimSpace(to)
	if from == "" || to == "" || from == to {
		return conversion{1, 0}, true
	}
	f, okf := units[from]
	t, okt := units[to]
	if !okf || !okt || f.dim != t.dim {
		return conversion{}, false
	}
	// base = x·ff + fo; y = (base − to)/tf
	return conversion{a: f.factor / t.factor, b: (f.offset - t.offset) / t.factor}, true
}
