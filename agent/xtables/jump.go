package xtables

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Jump is a rule in a built-in chain (or anyone's chain) that sends traffic
// into one of a backend's chains: the hook through which its rules are
// reached at all.
type Jump struct {
	Table, Chain string
	// Args are the rule's iptables arguments, matches then target, e.g.
	// "-m", "comment", "--comment", "synterix service portals", "-j",
	// "SYNX-SERVICES".
	Args []string
}

// Target is the chain the jump leads to (its last argument).
func (j Jump) Target() string {
	if len(j.Args) == 0 {
		return ""
	}
	return j.Args[len(j.Args)-1]
}

// Saved renders the rule the way iptables-save prints it after
// "-A CHAIN ", so that a saved table can be searched for it.
func (j Jump) Saved() string { return SavedArgs(j.Args) }

// SavedArgs joins rule arguments the way iptables-save prints them: a
// comment is quoted unless it consists of letters, digits, '-' and '_'
// only, with '"' and '\' escaped.
func SavedArgs(args []string) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if i > 0 && args[i-1] == "--comment" && needsQuotes(a) {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `'`, `\'`).Replace(a) + `"`
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

func needsQuotes(s string) bool {
	if s == "" {
		return true
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return true
		}
	}
	return false
}

func (j Jump) cmd(op string, pos ...string) []string {
	args := append([]string{"-w", "-t", j.Table, op, j.Chain}, pos...)
	return append(args, j.Args...)
}

// Insert puts the jump at the top of its chain, ahead of rules that might
// accept the traffic first.
func Insert(ctx context.Context, r Runner, j Jump) error {
	if _, err := r.Exec(ctx, j.cmd("-I", "1")...); err != nil {
		return fmt.Errorf("add jump from %s %s: %w", j.Table, j.Chain, err)
	}
	return nil
}

// Ensure inserts the jump at the top of its chain unless it is there. It
// reports whether it inserted it.
func Ensure(ctx context.Context, r Runner, j Jump) (bool, error) {
	if _, err := r.Exec(ctx, j.cmd("-C")...); err == nil {
		return false, nil
	}
	return true, Insert(ctx, r, j)
}

// maxCopies bounds Delete against a jump that someone keeps adding back.
const maxCopies = 100

// Delete removes every copy of the jump. A jump that is not there, or a
// chain or table that does not exist, is not an error.
func Delete(ctx context.Context, r Runner, j Jump) error {
	for i := 0; i < maxCopies; i++ {
		if _, err := r.Exec(ctx, j.cmd("-C")...); err != nil {
			return nil
		}
		if _, err := r.Exec(ctx, j.cmd("-D")...); err != nil {
			return fmt.Errorf("delete jump from %s %s: %w", j.Table, j.Chain, err)
		}
	}
	return fmt.Errorf("jump from %s %s to %s keeps coming back", j.Table, j.Chain, j.Target())
}

var versionRE = regexp.MustCompile(`v(\d+)\.(\d+)\.(\d+)`)

// HasRandomFully reports whether the tools support MASQUERADE
// --random-fully (iptables 1.6.2 and later), from "iptables --version".
func HasRandomFully(ctx context.Context, r Runner) (bool, error) {
	out, err := r.Exec(ctx, "--version")
	if err != nil {
		return false, err
	}
	m := versionRE.FindStringSubmatch(string(out))
	if m == nil {
		return false, fmt.Errorf("cannot read the iptables version from %q", strings.TrimSpace(string(out)))
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	return v[0] > 1 || v[0] == 1 && (v[1] > 6 || v[1] == 6 && v[2] >= 2), nil
}
