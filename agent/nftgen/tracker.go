package nftgen

import (
	"context"

	"k8s.io/klog/v2"
)

// Tracker remembers the generation at which a backend last verified that
// the kernel holds what it wrote. While the generation holds, nothing in
// nf_tables changed, so a periodic full sync need not read the kernel back.
// A backend marks a generation after a read-back that found nothing to
// write, and forgets it after any write of its own or any error.
type Tracker struct {
	// Read reads the generation; nil means the backend's rules are not in
	// nf_tables (iptables legacy): nothing is ever marked as verified.
	Read func(context.Context) (uint32, error)
	// What names the backend in the log line of a failed reading.
	What string

	marked bool
	gen    uint32
	failed bool // a failed reading was logged
}

// Current reads the generation. ok is false when there is no reader or the
// reading failed; a failure is logged once, and full syncs then read back.
func (t *Tracker) Current(ctx context.Context) (gen uint32, ok bool) {
	if t.Read == nil {
		return 0, false
	}
	gen, err := t.Read(ctx)
	if err != nil {
		if !t.failed {
			klog.InfoS("Cannot read the nf_tables generation, every full sync reads the kernel back", "backend", t.What, "err", err)
			t.failed = true
		}
		return 0, false
	}
	return gen, true
}

// Mark records that the kernel was verified at generation gen.
func (t *Tracker) Mark(gen uint32) { t.marked, t.gen = true, gen }

// Forget drops the verified generation.
func (t *Tracker) Forget() { t.marked = false }

// Marked reports whether a verified generation is recorded.
func (t *Tracker) Marked() bool { return t.marked }

// Holds reports whether a verified generation is recorded and the kernel
// is still at it, and returns the generation read.
func (t *Tracker) Holds(ctx context.Context) (uint32, bool) {
	if !t.marked {
		return 0, false
	}
	gen, ok := t.Current(ctx)
	return gen, ok && gen == t.gen
}
