package xtables_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// FuzzQuoteFailedLine reads arbitrary iptables-restore error messages (the
// tool's text, not ours) against arbitrary input: it never panics, and what
// it quotes is exactly the line the message names.
func FuzzQuoteFailedLine(f *testing.F) {
	f.Add([]byte("*nat\n:SYNX-A - [0:0]\n-A SYNX-A -j NOWHERE\nCOMMIT\n"), "iptables-restore: line 3 failed")
	f.Add([]byte("a\nb"), "line -1 failed")
	f.Add([]byte(""), "line 99999999999999999999 failed")
	f.Add([]byte("x\n"), "line line 1")
	f.Fuzz(func(t *testing.T, stdin []byte, msg string) {
		got := xtables.QuoteFailedLine(stdin, msg)
		if got == "" {
			return
		}
		var n int
		if _, err := fmt.Sscanf(got, " (input line %d:", &n); err != nil || n < 1 {
			t.Fatalf("QuoteFailedLine = %q: no line number", got)
		}
		lines := bytes.Split(stdin, []byte("\n"))
		if n > len(lines) {
			t.Fatalf("QuoteFailedLine = %q for %d lines", got, len(lines))
		}
		if want := fmt.Sprintf(" (input line %d: %q)", n, lines[n-1]); got != want {
			t.Fatalf("QuoteFailedLine = %q, want %q", got, want)
		}
	})
}

// FuzzSavedArgs renders arbitrary comments the way iptables-save prints
// them: reading the quoted comment back gives the comment, and nothing
// outside it changes, so that a saved jump rule is always found again.
func FuzzSavedArgs(f *testing.F) {
	for _, c := range []string{"synterix service portals", "one_word-1", `say "hi"`, `a\b`, "it's", "", "x\ny"} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, comment string) {
		args := []string{"-m", "comment", "--comment", comment, "-j", "SYNX-SERVICES"}
		got := xtables.SavedArgs(args)
		const head, tail = "-m comment --comment ", " -j SYNX-SERVICES"
		if !strings.HasPrefix(got, head) || !strings.HasSuffix(got, tail) {
			t.Fatalf("SavedArgs = %q: the arguments around the comment changed", got)
		}
		quoted := got[len(head) : len(got)-len(tail)]
		back, ok := unquote(quoted)
		if !ok || back != comment {
			t.Fatalf("comment %q saved as %s, read back as %q (ok %v)", comment, quoted, back, ok)
		}
	})
}

// unquote reads a comment as iptables-save prints it: bare, or between
// double quotes with backslash escapes.
func unquote(s string) (string, bool) {
	if !strings.HasPrefix(s, `"`) {
		return s, !strings.ContainsAny(s, " \"'\\") && s != ""
	}
	if len(s) < 2 || !strings.HasSuffix(s, `"`) {
		return "", false
	}
	var b strings.Builder
	in := s[1 : len(s)-1]
	for i := 0; i < len(in); i++ {
		switch c := in[i]; c {
		case '\\':
			if i+1 == len(in) {
				return "", false
			}
			i++
			b.WriteByte(in[i])
		case '"':
			return "", false // an unescaped quote inside
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
