package ipvs

import (
	"context"
	"fmt"
	"io"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
)

// The iptables glue (masquerade, hairpin, source ranges, services without
// endpoints) runs through the shared xtables runner of the node's iptables
// flavour and the backend's family, so that it lands in the same tables as
// the rest of the node's rules, legacy or nft.

// glueRunner returns the runner of the glue for a family and a detected
// mode (never ModeAuto); unit tests pass a FAKE one.
type glueRunner func(fam model.Family, mode xtables.Mode) (xtables.Runner, error)

// nodeGlue returns the real runners, running the tools inside the node's
// network namespace.
func nodeGlue(node *linuxNode) glueRunner {
	return func(fam model.Family, mode xtables.Mode) (xtables.Runner, error) {
		r, err := xtables.NewRunner(fam, mode)
		if err != nil {
			return nil, err
		}
		return nsRunner{node: node, r: r}, nil
	}
}

// detectMode detects the iptables flavour inside the node's namespace.
func detectMode(ctx context.Context, node *linuxNode) (mode xtables.Mode, err error) {
	err = node.do(func() (e error) { mode, e = xtables.DetectMode(ctx); return })
	if err != nil {
		return "", fmt.Errorf("detect the iptables flavour for the IPVS glue: %w", err)
	}
	return mode, nil
}

// nsRunner runs an xtables.Runner inside the node's network namespace.
type nsRunner struct {
	node *linuxNode
	r    xtables.Runner
}

func (n nsRunner) Exec(ctx context.Context, args ...string) (out []byte, err error) {
	err = n.node.do(func() (e error) { out, e = n.r.Exec(ctx, args...); return })
	return out, err
}

func (n nsRunner) Restore(ctx context.Context, payload []byte, args ...string) error {
	return n.node.do(func() error { return n.r.Restore(ctx, payload, args...) })
}

func (n nsRunner) Save(ctx context.Context, read func(io.Reader) error, args ...string) error {
	return n.node.do(func() error { return n.r.Save(ctx, read, args...) })
}

// writeGlue rewrites the content of our chains, then makes sure the jumps
// into them exist; without the chains it adds no jump.
func (b *Backend) writeGlue(ctx context.Context, st *model.State) []error {
	rc := b.rules(st)
	if err := b.xt.Restore(ctx, []byte(rc.render()), "-w", "--noflush"); err != nil {
		return []error{err}
	}
	var errs []error
	for _, j := range rc.jumps() {
		if _, err := xtables.Ensure(ctx, b.xt, j); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// deleteGlue removes the jumps, then our chains.
func (b *Backend) deleteGlue(ctx context.Context) []error {
	var errs []error
	rc := b.rules(nil)
	for _, j := range rc.jumps() {
		if err := xtables.Delete(ctx, b.xt, j); err != nil {
			errs = append(errs, err)
		}
	}
	for _, table := range []string{"nat", "filter"} {
		for _, ch := range rc.chains()[table] {
			if err := deleteChain(ctx, b.xt, table, ch); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// deleteChain flushes and deletes a chain if it exists.
func deleteChain(ctx context.Context, r xtables.Runner, table, chain string) error {
	if _, err := r.Exec(ctx, "-w", "-t", table, "-n", "-L", chain); err != nil {
		return nil // absent
	}
	if _, err := r.Exec(ctx, "-w", "-t", table, "-F", chain); err != nil {
		return err
	}
	_, err := r.Exec(ctx, "-w", "-t", table, "-X", chain)
	return err
}
