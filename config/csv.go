package config

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// csvColumns are the columns a point table may have; name, table (or
// register), address and type are the usual minimum.
var csvColumns = []string{"name", "measure", "table", "address", "register", "type", "order", "bit", "length", "scale", "offset", "unit", "access", "stale_after"}

// loadCSV appends the points of the profile's CSV table. Every mistake names
// the CSV file, its line and the column.
func (v *validator) loadCSV(c *Config, p, where string, pr *Profile) {
	path := c.Path(pr.PointsCSV)
	fail := func(line int, format string, args ...any) {
		v.errs = append(v.errs, &Error{File: path, Line: line, Where: where, Msg: fmt.Sprintf(format, args...)})
	}
	f, err := os.Open(path)
	if err != nil {
		v.errf(p+".points_csv", where, "points_csv: %v", err)
		return
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#'
	r.TrimLeadingSpace = true
	header, err := r.Read()
	if err != nil {
		fail(1, "no header line: %v", err)
		return
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))) // spreadsheets write a BOM
		if !contains(csvColumns, h) {
			fail(1, "column %q: use %s", h, strings.Join(csvColumns, ", "))
			return
		}
		if _, dup := col[h]; dup {
			fail(1, "column %q appears twice", h)
			return
		}
		col[h] = i
	}
	if _, ok := col["name"]; !ok {
		fail(1, "the name column is required")
		return
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			fail(line, "%v", err)
			return
		}
		pt := Point{File: path, Line: line}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		num := func(name string, dst **int) {
			if s := get(name); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil {
					fail(line, "point %q: %s %q is not a whole number", get("name"), name, s)
					return
				}
				*dst = &n
			}
		}
		pt.Name, pt.Measure, pt.Table, pt.Type = get("name"), get("measure"), get("table"), get("type")
		pt.Order, pt.Unit, pt.Access = get("order"), get("unit"), get("access")
		num("address", &pt.Address)
		num("register", &pt.Register)
		num("bit", &pt.Bit)
		var length *int
		num("length", &length)
		if length != nil {
			pt.Length = *length
		}
		if s := get("scale"); s != "" {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				fail(line, "point %q: scale %q is not a number", pt.Name, s)
			} else {
				pt.Scale = &f
			}
		}
		if s := get("offset"); s != "" {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				fail(line, "point %q: offset %q is not a number", pt.Name, s)
			}
			pt.Offset = f
		}
		if s := get("stale_after"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				fail(line, "point %q: stale_after %q: %v", pt.Name, s, err)
			}
			pt.StaleAfter = d
		}
		pr.Points = append(pr.Points, pt)
	}
}
