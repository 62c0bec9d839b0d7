// Package xtablestest holds a FAKE xtables.Runner for unit tests of the
// backends. It models iptables tables in memory and understands the subset
// of iptables, iptables-restore and iptables-save that the backends use. It
// proves nothing about the kernel or the real tools: the kernel tests of
// each backend, which run real netfilter in network namespaces, do.
package xtablestest

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// Call is one command the FAKE ran.
type Call struct {
	Bin   string
	Args  []string
	Stdin string // restore input
}

func (c Call) String() string { return strings.TrimSpace(c.Bin + " " + strings.Join(c.Args, " ")) }

// Fake is a FAKE xtables.Runner: in-memory tables of one family, commands
// logged under the tool names of its family and mode.
type Fake struct {
	mu     sync.Mutex
	bins   xtables.Binaries
	tables map[string]*table
	calls  []Call
	// Version is what "--version" prints.
	Version string
}

var _ xtables.Runner = (*Fake)(nil)

// New returns an empty FAKE for a family and mode.
func New(fam model.Family, m xtables.Mode) *Fake {
	flavour := "nf_tables"
	if m == xtables.ModeLegacy {
		flavour = "legacy"
	}
	bins := xtables.BinariesFor(fam, m)
	return &Fake{bins: bins, tables: map[string]*table{}, Version: bins.Cmd + " v1.8.9 (" + flavour + ")"}
}

// Binaries are the tool names the FAKE logs.
func (f *Fake) Binaries() xtables.Binaries { return f.bins }

// Calls returns the commands run so far.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// ResetCalls forgets the commands run so far.
func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// Restores returns the input of every restore run so far.
func (f *Fake) Restores() []string {
	var out []string
	for _, c := range f.Calls() {
		if c.Bin == f.bins.Restore {
			out = append(out, c.Stdin)
		}
	}
	return out
}

// Rules returns the rules of a chain as iptables-save prints them after
// "-A CHAIN "; ok is false when the chain does not exist.
func (f *Fake) Rules(tableName, chain string) (rules []string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.tables[tableName]
	if t == nil || t.chains[chain] == nil {
		return nil, false
	}
	return append([]string(nil), t.chains[chain].rules...), true
}

// Chains lists the chains of a table, built-in ones first.
func (f *Fake) Chains(tableName string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.tables[tableName]; t != nil {
		return t.names()
	}
	return nil
}

// Dump renders every table as iptables-save does, without counters.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dump("")
}

// Exec implements xtables.Runner for the commands the backends use: -S,
// -L, -C, -A, -I, -D, -N, -F, -X and --version, with -w and -t.
func (f *Fake) Exec(ctx context.Context, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, Call{Bin: f.bins.Cmd, Args: args})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := parseCommand(args)
	if err != nil {
		return nil, f.fail(args, err.Error())
	}
	if c.op == "--version" {
		return []byte(f.Version + "\n"), nil
	}
	t, err := f.table(c.table)
	if err != nil {
		return nil, f.fail(args, err.Error())
	}
	out, err := t.exec(c)
	if err != nil {
		return nil, f.fail(args, err.Error())
	}
	return []byte(out), nil
}

// Restore implements xtables.Runner: each table block is applied at its
// COMMIT, all or nothing; without --noflush a block first empties its
// table. An error names the failing line as iptables-restore does.
func (f *Fake) Restore(ctx context.Context, payload []byte, args ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, Call{Bin: f.bins.Restore, Args: args, Stdin: string(payload)})
	if err := ctx.Err(); err != nil {
		return err
	}
	noflush := false
	for _, a := range args {
		noflush = noflush || a == "--noflush" || a == "-n"
	}
	var name string
	var work *table
	for i, line := range strings.Split(string(payload), "\n") {
		var err error
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '*':
			name = line[1:]
			work, err = f.table(name)
			if err == nil {
				work = work.clone(!noflush)
			}
		case work == nil:
			err = fmt.Errorf("no table")
		case line == "COMMIT":
			f.tables[name], work = work, nil
		default:
			err = work.restoreLine(line)
		}
		if err != nil {
			msg := fmt.Sprintf("%s: line %d failed: %v", f.bins.Restore, i+1, err)
			return fmt.Errorf("%s %s: exit status 1: %s%s", f.bins.Restore, strings.Join(args, " "), msg, xtables.QuoteFailedLine(payload, msg))
		}
	}
	if work != nil {
		return fmt.Errorf("%s: COMMIT expected at the end of table %s", f.bins.Restore, name)
	}
	return nil
}

// Save implements xtables.Runner; "-t TABLE" selects one table.
func (f *Fake) Save(ctx context.Context, read func(io.Reader) error, args ...string) error {
	f.mu.Lock()
	f.calls = append(f.calls, Call{Bin: f.bins.Save, Args: args})
	only := ""
	for i, a := range args {
		if a == "-t" && i+1 < len(args) {
			only = args[i+1]
			if _, err := f.table(only); err != nil {
				f.mu.Unlock()
				return fmt.Errorf("%s: %v", f.bins.Save, err)
			}
		}
	}
	out := f.dump(only)
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return read(strings.NewReader(out))
}

func (f *Fake) fail(args []string, msg string) error {
	return fmt.Errorf("%s %s: exit status 1: %s", f.bins.Cmd, strings.Join(args, " "), msg)
}

func (f *Fake) dump(only string) string {
	var b strings.Builder
	names := make([]string, 0, len(f.tables))
	for n := range f.tables {
		if only == "" || n == only {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		t := f.tables[n]
		b.WriteString("# Generated by FAKE " + f.bins.Save + "\n*" + n + "\n")
		for _, c := range t.names() {
			policy := "-"
			if t.chains[c].builtin {
				policy = "ACCEPT"
			}
			b.WriteString(":" + c + " " + policy + " [0:0]\n")
		}
		for _, c := range t.names() {
			for _, r := range t.chains[c].rules {
				b.WriteString("-A " + c + " " + r + "\n")
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

// builtins are the built-in chains of the tables the FAKE knows.
var builtins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"raw":    {"PREROUTING", "OUTPUT"},
}

// table returns a table, creating it with its built-in chains on first
// use as the kernel does.
func (f *Fake) table(name string) (*table, error) {
	if t := f.tables[name]; t != nil {
		return t, nil
	}
	bs, ok := builtins[name]
	if !ok {
		return nil, fmt.Errorf("can't initialize iptables table `%s': Table does not exist", name)
	}
	t := &table{name: name, chains: map[string]*chain{}}
	for _, c := range bs {
		t.chains[c] = &chain{builtin: true}
	}
	f.tables[name] = t
	return t, nil
}

// command is one parsed iptables command line.
type command struct {
	table, op, chain string
	pos              int // -I position, 1-based
	rule             []string
}

// parseCommand reads "[-w] [-t TABLE] [-n] OP [CHAIN] [POS] [RULE...]".
func parseCommand(args []string) (command, error) {
	c := command{table: "filter"}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "-w", "--wait", "-n", "--numeric", "-v", "-x":
		case "-t", "--table":
			if i+1 == len(args) {
				return c, fmt.Errorf("option -t needs a table")
			}
			c.table, i = args[i+1], i+1
		case "--version", "-V":
			c.op = "--version"
			return c, nil
		case "-S", "-L", "-F", "-X", "-N", "-A", "-C", "-D", "-I":
			c.op, c.rule = a, args[i+1:]
			if len(c.rule) > 0 && !strings.HasPrefix(c.rule[0], "-") {
				c.chain, c.rule = c.rule[0], c.rule[1:]
			}
			if a == "-I" {
				c.pos = 1
				if len(c.rule) > 0 {
					if n, err := strconv.Atoi(c.rule[0]); err == nil {
						c.pos, c.rule = n, c.rule[1:]
					}
				}
			}
			return c, nil
		default:
			return c, fmt.Errorf("FAKE does not understand %q", a)
		}
	}
	return c, fmt.Errorf("no command given")
}
