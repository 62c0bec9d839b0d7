package probe

import (
	"context"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/iptables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// In a namespace where our canary chain exists in one flavour, that
// flavour is chosen without counting every rule.
func TestDetectIPTablesModeAdoptsOurFlavour(t *testing.T) {
	netns.Require(t, "iptables-nft", "iptables-legacy", "iptables-nft-save", "iptables-legacy-save")
	for _, tc := range []struct {
		bin  string
		want iptables.Mode
	}{{"iptables-legacy", iptables.ModeLegacy}, {"iptables-nft", iptables.ModeNFT}} {
		ns := netns.New(t, "probe")
		ns.MustExec(tc.bin, "-t", "nat", "-N", canaryChain)
		// More rules in the other flavour: DetectMode alone would pick it.
		other := "iptables-nft"
		if tc.bin == "iptables-nft" {
			other = "iptables-legacy"
		}
		for _, c := range []string{"A", "B", "C"} {
			ns.MustExec(other, "-t", "filter", "-N", "OTHER-"+c)
			ns.MustExec(other, "-t", "filter", "-A", "OTHER-"+c, "-j", "RETURN")
		}
		var got iptables.Mode
		if err := ns.Do(func() (err error) { got, err = DetectIPTablesMode(context.Background()); return }); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("canary in %s: mode %s, want %s", tc.bin, got, tc.want)
		}
	}
}
