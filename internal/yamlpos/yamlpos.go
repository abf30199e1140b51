// Package yamlpos maps the YAML paths of a parsed goccy/go-yaml file
// ("$.devices[1].unit_id") to the lines they stand on, so that every YAML
// loader of ours can name the line of a mistake it finds after decoding.
package yamlpos

import (
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// Lines maps YAML paths to lines. A key: value pair's path is the value's
// path; its line is the key's.
type Lines struct {
	m map[string]int
}

// Index walks every document of f. onPair, when not nil, is called for
// every key: value pair with the value's path, the key and the key's line.
func Index(f *ast.File, onPair func(path, key string, value ast.Node, line int)) *Lines {
	l := &Lines{m: map[string]int{}}
	if f == nil {
		return l
	}
	for _, doc := range f.Docs {
		if doc.Body == nil {
			continue
		}
		ast.Walk(visitFunc(func(n ast.Node) {
			tk := n.GetToken()
			p := n.GetPath()
			if mv, ok := n.(*ast.MappingValueNode); ok && mv.Key != nil && mv.Value != nil {
				p, tk = mv.Value.GetPath(), mv.Key.GetToken()
				if onPair != nil && tk != nil && tk.Position != nil {
					onPair(p, mv.Key.String(), mv.Value, tk.Position.Line)
				}
			}
			if tk == nil || tk.Position == nil {
				return
			}
			if _, seen := l.m[p]; !seen {
				l.m[p] = tk.Position.Line
			}
		}), doc.Body)
	}
	return l
}

type visitFunc func(ast.Node)

func (f visitFunc) Visit(n ast.Node) ast.Visitor {
	if n != nil {
		f(n)
	}
	return f
}

// Line returns the line of path, or of its nearest parent in the file; 0
// when none is.
func (l *Lines) Line(path string) int {
	for p := path; p != ""; {
		if n, ok := l.m[p]; ok {
			return n
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

// Has reports whether path itself stands in the file.
func (l *Lines) Has(path string) bool {
	_, ok := l.m[path]
	return ok
}

// Each calls f for every path in the file, in no particular order.
func (l *Lines) Each(f func(path string, line int)) {
	for p, n := range l.m {
		f(p, n)
	}
}
