package v1alpha1_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// apiSource parses the non-test Go files of this package.
func apiSource(t *testing.T) []*ast.File {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// stringConst is one string constant of the package.
type stringConst struct{ name, typ, value string }

func stringConsts(files []*ast.File) []stringConst {
	var out []stringConst
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				typ := ""
				if id, ok := vs.Type.(*ast.Ident); ok {
					typ = id.Name
				}
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, _ := strconv.Unquote(lit.Value)
					out = append(out, stringConst{name: n.Name, typ: typ, value: v})
				}
			}
		}
	}
	return out
}

// Every condition type and reason is a valid metav1.Condition value (the API
// server refuses anything else, and the status write with it), is named
// after its value, and no value is defined twice.
func TestConditionContract(t *testing.T) {
	reasonPattern := regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)
	seen := map[string]string{}
	n := 0
	for _, c := range stringConsts(apiSource(t)) {
		var prefix string
		switch {
		case strings.HasPrefix(c.name, "Condition"):
			prefix = "Condition"
		case strings.HasPrefix(c.name, "Reason"):
			prefix = "Reason"
		default:
			continue
		}
		n++
		if c.typ != "" {
			t.Errorf("%s has type %s; condition types and reasons are untyped strings", c.name, c.typ)
		}
		if !reasonPattern.MatchString(c.value) || len(c.value) > 316 {
			t.Errorf("%s = %q is not a valid condition type or reason", c.name, c.value)
		}
		if c.name != prefix+c.value {
			t.Errorf("%s = %q: name it %s%s", c.name, c.value, prefix, c.value)
		}
		if other, dup := seen[prefix+c.value]; dup {
			t.Errorf("%s and %s both define %q", c.name, other, c.value)
		}
		seen[prefix+c.value] = c.name
	}
	if n < 10 {
		t.Fatalf("found only %d condition constants: the parser missed them", n)
	}
}

// Every value of a +kubebuilder:validation:Enum marker on a type has a
// constant of that type, and every constant of such a type is a value the API
// server accepts, so that code never spells an enum value out.
func TestEnumTypesHaveConstants(t *testing.T) {
	files := apiSource(t)
	enums := map[string][]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.TYPE || g.Doc == nil {
				continue
			}
			for _, line := range strings.Split(g.Doc.Text(), "\n") {
				if v, ok := strings.CutPrefix(line, "+kubebuilder:validation:Enum="); ok {
					enums[g.Specs[0].(*ast.TypeSpec).Name.Name] = strings.Split(v, ";")
				}
			}
		}
	}
	if len(enums) < 5 {
		t.Fatalf("found only %d enum types: the parser missed them", len(enums))
	}
	consts := map[string][]string{}
	for _, c := range stringConsts(files) {
		if c.typ != "" {
			consts[c.typ] = append(consts[c.typ], c.value)
		}
	}
	for typ, values := range enums {
		for _, v := range values {
			if !slices.Contains(consts[typ], v) {
				t.Errorf("enum %s has no constant for %q", typ, v)
			}
		}
		for _, v := range consts[typ] {
			if !slices.Contains(values, v) {
				t.Errorf("constant %q of %s is not a value of its enum %v", v, typ, values)
			}
		}
	}
}
