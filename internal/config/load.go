package config

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Error is a configuration error at a place in a file.
type Error struct {
	File string
	Line int    // 0 when the key is absent from the file
	Key  string // dotted path, e.g. sip.listen[0].address
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Key, e.Msg)
	}
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %s", e.File, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load decodes, defaults and validates a configuration. name is used in
// error messages (a path, or the embedded default's name).
func Load(name string, data []byte) (*Config, error) {
	doc := &document{name: name}
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, doc.fromYAML(err)
	}
	doc.index(file)

	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.Strict(), yaml.DisallowUnknownField())
	if err := dec.Decode(&c); err != nil && !errors.Is(err, errEOF(err)) {
		return nil, doc.fromYAML(err)
	}
	c.Source = name
	c.applyDefaults(doc.present)
	if errs := c.validate(doc); len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

// errEOF treats an empty document as an empty configuration.
func errEOF(err error) error {
	if err != nil && strings.Contains(err.Error(), "EOF") {
		return err
	}
	return nil
}

var quotedRE = regexp.MustCompile(`"([^"]*)"`)

// document maps YAML paths to lines, so errors found after decoding can
// still point at the file.
type document struct {
	name  string
	lines map[string]int            // "sip.listen[0].address" -> line
	byPos map[token.Position]string // value or key token position -> key path
	vals  map[string]string         // scalar value -> key path (first seen)
}

func (d *document) index(f *ast.File) {
	d.lines = map[string]int{}
	d.byPos = map[token.Position]string{}
	d.vals = map[string]string{}
	for _, doc := range f.Docs {
		if doc.Body == nil {
			continue
		}
		ast.Walk(visitor(func(n ast.Node) {
			if seq, ok := n.(*ast.SequenceNode); ok {
				// List entries have no key of their own: remember their lines.
				for _, v := range seq.Values {
					if tok := v.GetToken(); tok != nil && tok.Position != nil {
						if _, seen := d.lines[keyPath(v.GetPath())]; !seen {
							d.lines[keyPath(v.GetPath())] = tok.Position.Line
						}
					}
				}
				return
			}
			mv, ok := n.(*ast.MappingValueNode)
			if !ok {
				return
			}
			p := keyPath(mv.Value.GetPath())
			if p == "" {
				p = keyPath(mv.Key.GetPath())
			}
			line := mv.Key.GetToken().Position.Line
			d.lines[p] = line
			d.byPos[pos(mv.Key.GetToken())] = p
			if vt := mv.Value.GetToken(); vt != nil {
				d.byPos[pos(vt)] = p
				if _, ok := d.vals[vt.Value]; !ok {
					d.vals[vt.Value] = p
				}
			}
		}), doc.Body)
	}
}

func pos(t *token.Token) token.Position {
	if t == nil || t.Position == nil {
		return token.Position{}
	}
	return token.Position{Line: t.Position.Line, Column: t.Position.Column}
}

type visitor func(ast.Node)

func (v visitor) Visit(n ast.Node) ast.Visitor {
	if n != nil {
		v(n)
	}
	return v
}

// keyPath turns goccy's "$.sip.listen[0].address" into "sip.listen[0].address".
func keyPath(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
}

// present reports whether the file sets key (a dotted path).
func (d *document) present(key string) bool {
	_, ok := d.lines[key]
	return ok
}

// at builds an error for key, finding its line (or its nearest parent's).
func (d *document) at(key, format string, args ...any) *Error {
	e := &Error{File: d.name, Key: key, Msg: fmt.Sprintf(format, args...)}
	for k := key; k != ""; k = parentKey(k) {
		if line, ok := d.lines[k]; ok {
			e.Line = line
			break
		}
	}
	return e
}

func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

// fromYAML converts a goccy error into an *Error with file, line and key.
func (d *document) fromYAML(err error) error {
	var ye yaml.Error
	if !errors.As(err, &ye) {
		// Some decode errors (durations) carry no token: find the value
		// the message quotes, e.g. time: invalid duration "forever".
		e := &Error{File: d.name, Msg: err.Error()}
		if m := quotedRE.FindStringSubmatch(err.Error()); m != nil {
			if k, ok := d.vals[m[1]]; ok {
				e = d.at(k, "%s", err.Error())
			}
		}
		return e
	}
	tok := ye.GetToken()
	e := &Error{File: d.name, Msg: ye.GetMessage()}
	if tok == nil {
		return e
	}
	e.Line = tok.Position.Line
	var unknown *yaml.UnknownFieldError
	switch {
	case errors.As(err, &unknown):
		e.Key = d.byPos[pos(tok)]
		if e.Key == "" {
			e.Key = tok.Value
		}
		e.Msg = fmt.Sprintf("unknown key %q", tok.Value)
	default:
		e.Key = d.byPos[pos(tok)]
		var te *yaml.TypeError
		if errors.As(err, &te) {
			e.Msg = fmt.Sprintf("wrong type: got %s %q, want %s", kindName(te.SrcType.String()), tok.Value, kindName(te.DstType.String()))
		}
	}
	if e.Key == "" {
		// A syntax error: no key to name, but keep the position.
		e.Key = fmt.Sprintf("column %d", tok.Position.Column)
	}
	return e
}

func kindName(t string) string {
	switch t {
	case "time.Duration":
		return "a duration such as 30s"
	case "[]string", "[]config.User", "[]config.Listener":
		return "a list"
	case "map[string]interface {}":
		return "a mapping"
	case "int", "uint", "int64", "uint16":
		return "an integer"
	case "bool":
		return "true or false"
	}
	return "a " + t
}
