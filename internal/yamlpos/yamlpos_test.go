package yamlpos

import (
	"testing"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

func TestLines(t *testing.T) {
	src := "a:\n  b: 1\nlist:\n  - name: x\n    v: 2\n  - name: y\n"
	f, err := parser.ParseBytes([]byte(src), 0)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	l := Index(f, func(path, key string, v ast.Node, line int) {
		if key == "name" {
			names[v.String()] = line
		}
	})
	if names["x"] != 4 || names["y"] != 6 {
		t.Errorf("pairs seen: %v", names)
	}
	for path, want := range map[string]int{
		"$.a.b":          2,
		"$.list[0].name": 4,
		"$.list[0].v":    5,
		"$.list[1]":      6,
		"$.list[1].nope": 6, // falls back to the parent
		"$.nothing":      1, // the document itself
	} {
		if got := l.Line(path); got != want {
			t.Errorf("Line(%q) = %d, want %d", path, got, want)
		}
	}
	if !l.Has("$.list[0].v") || l.Has("$.list[1].v") {
		t.Error("Has is wrong")
	}
}
