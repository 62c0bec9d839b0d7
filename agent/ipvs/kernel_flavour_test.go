package ipvs

import (
	"context"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestKernelGlueFollowsTheNodesFlavour: on a node whose other rules
// (kubelet, CNI) are in the iptables flavour that the plain "iptables"
// binary does NOT run, the glue chains and jumps land in the node's flavour,
// as mode detection chooses, and Cleanup removes them from there. The VM
// stages plain iptables as nft by default and as legacy with
// `hack/vm/run.sh -iptables legacy`; the test takes the other one either way.
func TestKernelGlueFollowsTheNodesFlavour(t *testing.T) {
	requireKernel(t)
	netns.Require(t, "iptables-legacy", "iptables-nft", "iptables-legacy-save", "iptables-nft-save")
	tp := newTopo(t, 1)
	serveAll(t, tp, "tcp")
	nodeFlavour, plainFlavour := "iptables-legacy", "iptables-nft"
	if v := tp.node.MustExec("iptables", "--version"); strings.Contains(v, "legacy") {
		nodeFlavour, plainFlavour = "iptables-nft", "iptables-legacy"
	}
	for _, c := range []string{"A", "B", "C"} {
		tp.node.MustExec(nodeFlavour, "-w", "-t", "filter", "-N", "NODE-"+c)
		tp.node.MustExec(nodeFlavour, "-w", "-t", "filter", "-A", "NODE-"+c, "-j", "RETURN")
	}
	b := tp.newKernelBackend(t, Config{})
	kSync(t, b, kState(kService("web", model.TCP, 80, 30080, tp.backendIPs)))
	if r := request(t, tp.client, "tcp", kVIP+":80", ""); r.Server != "b1" {
		t.Fatalf("request through IPVS: %+v", r)
	}
	in, out := tp.node.MustExec(nodeFlavour+"-save"), tp.node.MustExec(plainFlavour+"-save")
	for _, want := range []string{":SYNXIPVS-SERVICES", ":SYNXIPVS-POSTROUTING", ":SYNXIPVS-FIREWALL",
		"-A PREROUTING -m comment --comment \"synterix ipvs services\" -j SYNXIPVS-SERVICES"} {
		if !strings.Contains(in, want) {
			t.Errorf("%s-save (the node's flavour) lacks %q:\n%s", nodeFlavour, want, in)
		}
	}
	if strings.Contains(out, "SYNXIPVS") {
		t.Errorf("glue rules landed in %s, the flavour of the plain iptables binary, not the node's %s:\n%s", plainFlavour, nodeFlavour, out)
	}
	if err := b.Cleanup(context.Background()); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	for _, bin := range []string{nodeFlavour, plainFlavour} {
		if save := tp.node.MustExec(bin + "-save"); strings.Contains(save, "SYNXIPVS") {
			t.Errorf("glue left in %s after Cleanup:\n%s", bin, save)
		}
	}
	if save := tp.node.MustExec(nodeFlavour + "-save"); !strings.Contains(save, "-A NODE-A -j RETURN") {
		t.Errorf("Cleanup removed the node's own rules:\n%s", save)
	}
}
