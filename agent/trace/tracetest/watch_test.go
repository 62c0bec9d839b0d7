package tracetest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
	"github.com/synterix/synterix-kube-proxy/agent/trace/kernel"
	"github.com/synterix/synterix-kube-proxy/agent/xtables"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// recorder is the test that owns the namespaces: it keeps the errors the
// watch reports instead of failing, so that a test can check that a
// disagreement is reported.
type recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// TestWatchCatchesALie: a foreign DNAT rule sends VIP:80 to 10.211.1.2;
// traced over the node's real rules every request agrees, traced over
// rules that send it to 10.211.1.3 (a lying reader) every request is
// reported, and a REJECT seen as a timeout too. The check can fail.
func TestWatchCatchesALie(t *testing.T) {
	netns.Require(t, "iptables", "iptables-save")
	rec := &recorder{TB: t}
	node, client, b := netns.New(rec, "node"), netns.New(rec, "client"), netns.New(rec, "b")
	netns.Link(t, node, "to-client", "10.210.0.1/24", client, "eth0", "10.210.0.2/24")
	netns.Link(t, node, "to-b", "10.211.1.1/24", b, "eth0", "10.211.1.2/24")
	b.AddAddr("eth0", "10.211.1.3/24")
	node.EnableForwarding()
	for _, ip := range []string{"10.211.1.2", "10.211.1.3"} {
		b.Serve(t, "tcp", ip+":8080", "srv-"+ip)
	}
	node.MustExec("iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-d", "10.96.0.10/32", "-p", "tcp", "--dport", "80",
		"-j", "DNAT", "--to-destination", "10.211.1.2:8080")
	node.MustExec("iptables", "-w", "-t", "filter", "-A", "FORWARD", "-d", "10.211.1.9/32", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")

	honest := func(ctx context.Context, fam model.Family) (trace.Tracer, error) {
		return kernel.IPTables(ctx, fam, xtables.ModeAuto)
	}
	stats, stop := Watch(honest)
	for range 5 {
		if _, err := client.Request("tcp", "10.96.0.10:80", netns.RequestOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if errs := rec.errors(); len(errs) > 0 || stats.Checked != 5 {
		t.Fatalf("honest reader: checked %d, errors %v", stats.Checked, errs)
	}

	lie := "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.211.1.3:8080\nCOMMIT\n" +
		"*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -d 10.211.1.9/32 -p tcp -j DROP\nCOMMIT\n"
	liar := func(ctx context.Context, _ model.Family) (trace.Tracer, error) {
		rs, err := trace.ParseSave(strings.NewReader(lie))
		if err != nil {
			return nil, err
		}
		return &trace.IPTables{Rules: rs, Env: trace.Env{LocalAddrs: []netip.Addr{netip.MustParseAddr("10.210.0.1")}}}, nil
	}
	stats, stop = Watch(liar)
	defer stop()
	if _, err := client.Request("tcp", "10.96.0.10:80", netns.RequestOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := client.Request("tcp", "10.211.1.9:80", netns.RequestOptions{Timeout: time.Second})
	if netns.Outcome(err) != "refused" {
		t.Fatalf("REJECT rule: outcome %s", netns.Outcome(err))
	}
	errs := rec.errors()
	if stats.Disagreed != 2 || len(errs) != 2 {
		t.Fatalf("lying reader: %d disagreements, errors %v; want both requests reported", stats.Disagreed, errs)
	}
	if !strings.Contains(errs[0], "answered by 10.211.1.2:8080") || !strings.Contains(errs[1], "ended refused") {
		t.Errorf("reports do not say what happened: %v", errs)
	}
	t.Logf("reported as expected:\n%s", strings.Join(errs, "\n"))
}
