package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Instruction is one Dockerfile instruction with its continuation lines
// joined.
type Instruction struct {
	Line    int               // first line, 1-based
	Keyword string            // upper case: FROM, RUN, COPY, ...
	Flags   map[string]string // leading --name=value flags (COPY --from=build)
	Args    string            // the rest of the instruction, flags removed
}

// String is the instruction as written (flags normalised), for errors and
// image history.
func (in Instruction) String() string {
	s := in.Keyword
	for _, k := range sortedKeys(in.Flags) {
		s += " --" + k + "=" + in.Flags[k]
	}
	return s + " " + in.Args
}

// Stage is a FROM and the instructions up to the next FROM.
type Stage struct {
	Name string // the AS name, "" when unnamed
	From string // the image as written, before ARG substitution
	Line int
	Body []Instruction
}

// Dockerfile is a parsed Dockerfile: the ARGs before the first FROM and the
// stages.
type Dockerfile struct {
	GlobalArgs []Instruction
	Stages     []Stage
}

// Stage returns the stage named name.
func (d *Dockerfile) Stage(name string) (*Stage, bool) {
	for i := range d.Stages {
		if d.Stages[i].Name == name {
			return &d.Stages[i], true
		}
	}
	return nil, false
}

// ParseDockerfile splits a Dockerfile into instructions and stages. It knows
// the syntax only (comments, continuation lines, flags, FROM ... AS name);
// what the instructions mean is the plan's business.
func ParseDockerfile(r io.Reader) (*Dockerfile, error) {
	lines, err := logicalLines(r)
	if err != nil {
		return nil, err
	}
	d := &Dockerfile{}
	for _, l := range lines {
		in, err := parseInstruction(l.n, l.text)
		if err != nil {
			return nil, err
		}
		switch {
		case in.Keyword == "FROM":
			st, err := parseFrom(in)
			if err != nil {
				return nil, err
			}
			if st.Name != "" {
				if _, dup := d.Stage(st.Name); dup {
					return nil, fmt.Errorf("line %d: stage %q is defined twice", in.Line, st.Name)
				}
			}
			d.Stages = append(d.Stages, st)
		case len(d.Stages) == 0 && in.Keyword == "ARG":
			d.GlobalArgs = append(d.GlobalArgs, in)
		case len(d.Stages) == 0:
			return nil, fmt.Errorf("line %d: %s before the first FROM", in.Line, in.Keyword)
		default:
			st := &d.Stages[len(d.Stages)-1]
			st.Body = append(st.Body, in)
		}
	}
	if len(d.Stages) == 0 {
		return nil, fmt.Errorf("no FROM instruction")
	}
	return d, nil
}

type logicalLine struct {
	n    int
	text string
}

// logicalLines drops comments and blank lines and joins lines ending in a
// backslash with the next one. Comment lines inside a continuation are
// dropped, as Docker does.
func logicalLines(r io.Reader) ([]logicalLine, error) {
	var out []logicalLine
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		t := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(t, "#") || (t == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(t, "\\") {
			cur.WriteString(strings.TrimSuffix(t, "\\"))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(t)
		out = append(out, logicalLine{start, strings.TrimSpace(cur.String())})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur.Len() != 0 {
		return nil, fmt.Errorf("line %d: the file ends inside a continuation", start)
	}
	return out, nil
}

// parseInstruction splits one logical line into keyword, flags and the rest.
func parseInstruction(n int, text string) (Instruction, error) {
	kw, rest, _ := strings.Cut(text, " ")
	in := Instruction{Line: n, Keyword: strings.ToUpper(kw), Flags: map[string]string{}}
	rest = strings.TrimSpace(rest)
	for strings.HasPrefix(rest, "--") {
		var flag string
		flag, rest, _ = strings.Cut(rest, " ")
		rest = strings.TrimSpace(rest)
		name, value, ok := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
		if !ok {
			return in, fmt.Errorf("line %d: flag %s has no value", n, flag)
		}
		in.Flags[name] = value
	}
	if rest == "" {
		return in, fmt.Errorf("line %d: %s has no arguments", n, in.Keyword)
	}
	in.Args = rest
	return in, nil
}

// parseFrom reads "FROM image [AS name]".
func parseFrom(in Instruction) (Stage, error) {
	if len(in.Flags) != 0 {
		return Stage{}, fmt.Errorf("line %d: FROM flags are not supported: %s", in.Line, in)
	}
	f := strings.Fields(in.Args)
	switch {
	case len(f) == 1:
		return Stage{From: f[0], Line: in.Line}, nil
	case len(f) == 3 && strings.EqualFold(f[1], "AS"):
		return Stage{From: f[0], Name: strings.ToLower(f[2]), Line: in.Line}, nil
	}
	return Stage{}, fmt.Errorf("line %d: want FROM image [AS name], got %s", in.Line, in)
}

// splitWords splits a shell command line into words, honouring single and
// double quotes and backslash escapes. "&&" and ";" outside quotes are words
// of their own, so that callers can split command lists.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, cur.String())
		}
		cur.Reset()
		inWord = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			flush()
		case c == '\'' || c == '"':
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unterminated %c quote in %q", c, s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			inWord = true
			i++
		case c == ';':
			flush()
			words = append(words, ";")
		case c == '&' && i+1 < len(s) && s[i+1] == '&':
			flush()
			words = append(words, "&&")
			i++
		case c == '|' || c == '>' || c == '<' || c == '`' || c == '&':
			return nil, fmt.Errorf("shell operator %q is not supported in %q", c, s)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return words, nil
}

// splitCommands splits words at "&&" and ";" into simple commands.
func splitCommands(words []string) [][]string {
	var out [][]string
	var cur []string
	for _, w := range words {
		if w == "&&" || w == ";" {
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, w)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// expand substitutes $NAME and ${NAME} from vars. A name that is not set
// is an error: Docker would substitute an empty string, which hides a
// missing ARG in a stage.
func expand(s string, vars map[string]string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		var name string
		if s[i+1] == '{' {
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			name = s[i+2 : i+j]
			i += j
		} else {
			j := i + 1
			for j < len(s) && (s[j] == '_' || isAlnum(s[j])) {
				j++
			}
			name = s[i+1 : j]
			i = j - 1
		}
		if name == "" {
			b.WriteByte('$')
			continue
		}
		v, ok := vars[name]
		if !ok {
			return "", fmt.Errorf("variable %s is not declared (ARG or ENV) in this stage", name)
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
