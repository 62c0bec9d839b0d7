package conntrack

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

func TestTuningMax(t *testing.T) {
	cases := []struct {
		t    Tuning
		cpus int
		want int64
	}{
		{Tuning{}, 4, 0},
		{Tuning{Min: 1000}, 4, 0}, // min alone keeps the kernel's limit
		{Tuning{MaxPerCore: 32768}, 4, 131072},
		{Tuning{MaxPerCore: 32768, Min: 131072}, 2, 131072},
		{Tuning{MaxPerCore: 32768, Min: 1000}, 2, 65536},
	}
	for _, c := range cases {
		if got := c.t.Max(c.cpus); got != c.want {
			t.Errorf("%+v.Max(%d) = %d, want %d", c.t, c.cpus, got, c.want)
		}
	}
}

// readSysctls reads keys in the namespace.
func readSysctls(t *testing.T, ns *netns.NS, keys ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := ns.Do(func() error {
		for _, k := range keys {
			b, err := os.ReadFile(filepath.Join(sysctl.DefaultRoot, k))
			if err != nil {
				return err
			}
			out[k] = strings.TrimSpace(string(b))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// tuneIn runs Tune inside the namespace.
func tuneIn(t *testing.T, ns *netns.NS, tu Tuning) (applied []string, err error) {
	t.Helper()
	if e := ns.Do(func() error { applied, err = Tune(tu); return nil }); e != nil {
		t.Fatal(e)
	}
	return applied, err
}

// Real kernel, in a namespace the test creates: the host's sysctls are
// never written.
func TestTuneWritesTimeoutsInTheNamespace(t *testing.T) {
	netns.Require(t)
	if _, err := os.Stat(filepath.Join(sysctl.DefaultRoot, keyTCPEstablished)); err != nil {
		t.Skipf("SKIPPING KERNEL TEST: nf_conntrack is not loaded: %v", err)
	}
	ns := netns.New(t, "ct-tune")
	keys := []string{keyTCPEstablished, keyTCPCloseWait, keyUDPTimeout, keyUDPStreamTimout}
	host := readHost(t, keys...)
	before := readSysctls(t, ns, keys...)
	tu := Tuning{TCPEstablishedTimeout: 7 * time.Hour, TCPCloseWaitTimeout: 61 * time.Second,
		UDPTimeout: 1500 * time.Millisecond} // UDP stream: 0, kept
	applied, err := tuneIn(t, ns, tu)
	if err != nil {
		t.Fatalf("Tune: %v", err)
	}
	want := []string{keyTCPEstablished + "=25200", keyTCPCloseWait + "=61", keyUDPTimeout + "=2"}
	if !slices.Equal(applied, want) {
		t.Fatalf("applied %q, want %q", applied, want)
	}
	got := readSysctls(t, ns, keys...)
	if got[keyTCPEstablished] != "25200" || got[keyTCPCloseWait] != "61" || got[keyUDPTimeout] != "2" {
		t.Fatalf("namespace sysctls after Tune: %v", got)
	}
	if got[keyUDPStreamTimout] != before[keyUDPStreamTimout] {
		t.Fatalf("udp stream timeout changed from %s to %s although it was 0", before[keyUDPStreamTimout], got[keyUDPStreamTimout])
	}
	if after := readHost(t, keys...); !maps.Equal(after, host) {
		t.Fatalf("host sysctls changed: %v -> %v", host, after)
	}
	// Same values again: nothing differs, nothing is written.
	applied, err = tuneIn(t, ns, tu)
	if err != nil || len(applied) != 0 {
		t.Fatalf("second Tune: applied %q, err %v; want nothing", applied, err)
	}
}

// readHost reads keys in the test process's own (host) namespace, to check
// that they did not change.
func readHost(t *testing.T, keys ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, k := range keys {
		b, err := os.ReadFile(filepath.Join(sysctl.DefaultRoot, k))
		if err != nil {
			t.Fatal(err)
		}
		out[k] = strings.TrimSpace(string(b))
	}
	return out
}

// Outside the initial namespace the kernel makes nf_conntrack_max
// read-only: Tune names it as not applied and still applies the rest.
func TestTuneReportsReadOnlyMaxAndAppliesTheRest(t *testing.T) {
	netns.Require(t)
	if _, err := os.Stat(filepath.Join(sysctl.DefaultRoot, keyMax)); err != nil {
		t.Skipf("SKIPPING KERNEL TEST: nf_conntrack is not loaded: %v", err)
	}
	ns := netns.New(t, "ct-max")
	before := readSysctls(t, ns, keyMax)[keyMax]
	hostBefore := readHost(t, keyMax)
	// A size that certainly differs from the current one.
	per := int64(1 << 20)
	if before == "1048576" {
		per = 1 << 21
	}
	applied, err := tuneIn(t, ns, Tuning{MaxPerCore: per, UDPStreamTimeout: 121 * time.Second})
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Tune error = %v, want ErrReadOnly for nf_conntrack_max", err)
	}
	if !strings.Contains(err.Error(), keyMax) || !strings.Contains(err.Error(), "not applied") {
		t.Fatalf("error does not say what was not applied: %v", err)
	}
	if want := []string{keyUDPStreamTimout + "=121"}; !slices.Equal(applied, want) {
		t.Fatalf("applied %q, want %q", applied, want)
	}
	got := readSysctls(t, ns, keyMax, keyUDPStreamTimout)
	if got[keyMax] != before || got[keyUDPStreamTimout] != "121" {
		t.Fatalf("namespace sysctls after Tune: %v (max was %s)", got, before)
	}
	if after := readHost(t, keyMax); !maps.Equal(after, hostBefore) {
		t.Fatalf("host nf_conntrack_max changed: %v -> %v", hostBefore, after)
	}
}
