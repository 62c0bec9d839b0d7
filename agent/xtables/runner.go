package xtables

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Runner runs the tools of one family and flavour. It is all a backend
// needs of iptables; unit tests pass a FAKE (package xtablestest).
type Runner interface {
	// Exec runs iptables (or ip6tables) with args and returns its output.
	Exec(ctx context.Context, args ...string) ([]byte, error)
	// Restore feeds payload to iptables-restore with args, e.g.
	// "-w", "--noflush".
	Restore(ctx context.Context, payload []byte, args ...string) error
	// Save runs iptables-save with args and hands its output to read as it
	// streams in, so a large ruleset is never held whole.
	Save(ctx context.Context, read func(io.Reader) error, args ...string) error
}

// Commands is the real Runner: it runs the tools as child processes in the
// network namespace of the calling OS thread.
type Commands struct {
	bins Binaries
}

var _ Runner = (*Commands)(nil)

// NewRunner returns the Runner of a family and mode (not ModeAuto: detect
// first). It fails when a tool is not on PATH.
func NewRunner(fam model.Family, m Mode) (*Commands, error) {
	if m == ModeAuto {
		return nil, fmt.Errorf("xtables: mode not detected yet")
	}
	bins := BinariesFor(fam, m)
	for _, b := range []string{bins.Cmd, bins.Save, bins.Restore} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("iptables mode %s: %w", m, err)
		}
	}
	return &Commands{bins: bins}, nil
}

// Binaries names the tools the runner runs.
func (c *Commands) Binaries() Binaries { return c.bins }

// Exec implements Runner.
func (c *Commands) Exec(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, nil, c.bins.Cmd, args...)
}

// Restore implements Runner. Its error quotes the input line the tool
// complained about.
func (c *Commands) Restore(ctx context.Context, payload []byte, args ...string) error {
	if payload == nil {
		payload = []byte{}
	}
	_, err := run(ctx, payload, c.bins.Restore, args...)
	return err
}

// Save implements Runner. When read fails, the rest of the output is
// discarded so that the tool can finish.
func (c *Commands) Save(ctx context.Context, read func(io.Reader) error, args ...string) error {
	cmd := exec.CommandContext(ctx, c.bins.Save, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", c.bins.Save, err)
	}
	rerr := read(stdout)
	if rerr != nil {
		_, _ = io.Copy(io.Discard, stdout)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", c.bins.Save, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	if rerr != nil {
		return fmt.Errorf("read %s output: %w", c.bins.Save, rerr)
	}
	return nil
}

// run executes a command, feeding stdin when it is not nil, and returns its
// standard output; its error carries the command, its standard error and,
// for restore input, the offending line.
func run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if stdin != nil {
			msg += QuoteFailedLine(stdin, msg)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// QuoteFailedLine returns " (input line N: "...")" for a restore error
// message that names line N of stdin ("line 3 failed"), or "".
func QuoteFailedLine(stdin []byte, msg string) string {
	var line int
	if i := strings.Index(msg, "line "); i >= 0 {
		fmt.Sscanf(msg[i+5:], "%d", &line)
	}
	if line <= 0 {
		return ""
	}
	lines := bytes.Split(stdin, []byte("\n"))
	if line > len(lines) {
		return ""
	}
	return fmt.Sprintf(" (input line %d: %q)", line, lines[line-1])
}
