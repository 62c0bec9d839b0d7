package nftables

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/backend/backendtest"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestScenarios runs the kernel scenarios every backend passes (package
// backendtest) against the nftables backend.
func TestScenarios(t *testing.T) { backendtest.Run(t, harness(Options{})) }

// harness tells the scenarios how to build this backend and how to read
// and disturb its table with the nft tool.
func harness(opts Options) backendtest.Harness {
	table := opts.Table
	if table == "" {
		table = DefaultTable
	}
	nft := func(t testing.TB, node *netns.NS, args ...string) string {
		t.Helper()
		out, err := node.Exec(append([]string{"nft"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	nftFam := func(fam model.Family) string {
		if fam == model.IPv6 {
			return "ip6"
		}
		return "ip"
	}
	return backendtest.Harness{
		Tools: []string{"nft"},
		New: func(ctx context.Context, fam model.Family) (backend.Backend, error) {
			o := opts
			o.Family = fam
			return New(o)
		},
		Dump: func(t testing.TB, node *netns.NS, _ model.Family) string {
			return canonicalRuleset(nft(t, node, "list", "ruleset"))
		},
		Owned: func(t testing.TB, node *netns.NS, fam model.Family) int {
			return countOwned(t, nft(t, node, "-j", "list", "table", nftFam(fam), table))
		},
		Dispatch: func(t testing.TB, node *netns.NS, fam model.Family) []string {
			return elements(t, nft(t, node, "-j", "list", "map", nftFam(fam), table, setServices))
		},
		Wipe: func(t testing.TB, node *netns.NS, fam model.Family) {
			nft(t, node, "flush", "table", nftFam(fam), table)
		},
		WipeDispatch: func(t testing.TB, node *netns.NS, fam model.Family) {
			nft(t, node, "flush", "map", nftFam(fam), table, setServices)
		},
		Foreign: func(t testing.TB, node *netns.NS, fam model.Family) {
			if out, err := node.ExecInput([]byte(foreignRuleset(fam)), "nft", "-f", "-"); err != nil {
				t.Fatalf("foreign ruleset: %v: %s", err, out)
			}
			ipt := "iptables-nft"
			if fam == model.IPv6 {
				ipt = "ip6tables-nft"
			}
			node.MustExec(ipt, "-w", "-A", "FORWARD", "-m", "comment", "--comment", "someone else", "-j", "ACCEPT")
		},
		// The shared chain that picks one of one endpoint (the
		// masquerade jump and the pick: 2 rules), the service's dispatch
		// entry, now going there, and its one endpoints map entry.
		OneEndpointWrites: 4,
	}
}

// foreignRuleset is a kube-proxy-like table beside ours, in one family.
func foreignRuleset(fam model.Family) string {
	nf, addr := "ip", "ipv4_addr"
	if fam == model.IPv6 {
		nf, addr = "ip6", "ipv6_addr"
	}
	return `
table ` + nf + ` kube-proxy {
	map service-ips {
		type ` + addr + ` . inet_proto . inet_service : verdict
		elements = { ` + backendtest.IP(fam, backendtest.ForeignVIP) + ` . tcp . 80 : goto service-foreign }
	}
	chain service-foreign {
		meta l4proto tcp dnat to ` + backendtest.At(fam, "10.211.1.4", 8080) + `
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		` + nf + ` daddr . meta l4proto . th dport vmap @service-ips
	}
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		` + nf + ` saddr ` + backendtest.IP(fam, "10.211.0.0/16") + ` oifname "uplink" masquerade
	}
	chain filter-input {
		type filter hook input priority filter; policy accept;
		tcp dport 22 accept
	}
}
`
}

var volatileRE = regexp.MustCompile(`( counter packets \d+ bytes \d+| expires \S+)`)

// canonicalRuleset drops what changes while traffic flows from `nft list
// ruleset`.
func canonicalRuleset(out string) string { return volatileRE.ReplaceAllString(out, "") }

// nftJSON is the part of `nft -j list` output the tests read.
type nftJSON struct {
	Nftables []map[string]json.RawMessage `json:"nftables"`
}

func parseJSON(t testing.TB, out string) nftJSON {
	t.Helper()
	var j nftJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("nft -j: %v\n%s", err, out)
	}
	return j
}

// countOwned counts rules and the elements of the maps we fill.
func countOwned(t testing.TB, out string) int {
	n := 0
	for _, o := range parseJSON(t, out).Nftables {
		if _, ok := o["rule"]; ok {
			n++
		}
		for _, kind := range []string{"set", "map"} {
			if raw, ok := o[kind]; ok {
				var s struct {
					Name string            `json:"name"`
					Elem []json.RawMessage `json:"elem"`
				}
				if err := json.Unmarshal(raw, &s); err != nil {
					t.Fatal(err)
				}
				if s.Name != setAffinity && s.Name != setDigest {
					n += len(s.Elem)
				}
			}
		}
	}
	return n
}

// elements lists a set's elements as text.
func elements(t testing.TB, out string) []string {
	var els []string
	for _, o := range parseJSON(t, out).Nftables {
		for _, kind := range []string{"set", "map"} {
			if raw, ok := o[kind]; ok {
				var s struct {
					Elem []json.RawMessage `json:"elem"`
				}
				if err := json.Unmarshal(raw, &s); err != nil {
					t.Fatal(err)
				}
				for _, e := range s.Elem {
					els = append(els, strings.ReplaceAll(fmt.Sprintf("%s", e), `"`, " "))
				}
			}
		}
	}
	return els
}
