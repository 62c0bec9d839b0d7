package kernel

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestSets reads ipsets of every type the IPVS backend uses, in a test
// namespace, in the text "ipset save" prints.
func TestSets(t *testing.T) {
	netns.Require(t, "ipset")
	ns := netns.New(t, "sets")
	if err := ns.Run(
		[]string{"ipset", "create", "T-IPPORT", "hash:ip,port"},
		[]string{"ipset", "add", "T-IPPORT", "10.96.0.10,udp:53"},
		[]string{"ipset", "create", "T-IPPORTIP", "hash:ip,port,ip"},
		[]string{"ipset", "add", "T-IPPORTIP", "10.244.1.2,tcp:8080,10.244.1.2"},
		[]string{"ipset", "create", "T-IPPORTNET", "hash:ip,port,net"},
		[]string{"ipset", "add", "T-IPPORTNET", "203.0.113.7,tcp:80,192.168.50.0/24"},
		[]string{"ipset", "create", "T-NET", "hash:net"},
		[]string{"ipset", "add", "T-NET", "10.244.0.0/16"},
	); err != nil {
		t.Skipf("SKIPPING: ipset does not work here: %v", err)
	}
	var env map[string][]string
	if err := ns.Do(func() error {
		sets, err := Sets()
		env = map[string][]string{}
		for n, s := range sets {
			env[n+" "+s.Type] = s.Members
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"T-IPPORT hash:ip,port":        {"10.96.0.10,udp:53"},
		"T-IPPORTIP hash:ip,port,ip":   {"10.244.1.2,tcp:8080,10.244.1.2"},
		"T-IPPORTNET hash:ip,port,net": {"203.0.113.7,tcp:80,192.168.50.0/24"},
		"T-NET hash:net":               {"10.244.0.0/16"},
	}
	if !reflect.DeepEqual(env, want) {
		t.Errorf("sets %v, want %v", env, want)
	}
}

// TestReadEnv reads a test namespace's addresses and routes.
func TestReadEnv(t *testing.T) {
	netns.Require(t)
	a, b := netns.New(t, "env-a"), netns.New(t, "env-b")
	netns.Link(t, a, "to-b", "10.77.0.1/24", b, "eth0", "10.77.0.2/24")
	a.AddRoute("10.88.0.0/16", "10.77.0.2", "to-b")
	var got struct {
		local map[netip.Addr]bool
		dev   map[string]string
	}
	if err := a.Do(func() error {
		env, err := ReadEnv(model.IPv4)
		got.local = map[netip.Addr]bool{}
		for _, l := range env.LocalAddrs {
			got.local[l] = true
		}
		got.dev = map[string]string{}
		for _, r := range env.Routes {
			got.dev[r.Dst.String()] = r.Dev
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !got.local[netip.MustParseAddr("10.77.0.1")] || got.dev["10.88.0.0/16"] != "to-b" || got.dev["10.77.0.0/24"] != "to-b" {
		t.Errorf("env: local %v routes %v", got.local, got.dev)
	}
}

// TestRecentLists parses xt_recent's proc files.
func TestRecentLists(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "SYNX-AFF-X"), []byte(
		"src=10.210.0.2 ttl: 64 last_seen: 4295876 oldest_pkt: 2 4295000, 4295876\nsrc=10.210.0.3 ttl: 64 last_seen: 1 oldest_pkt: 1 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := recentLists(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got["SYNX-AFF-X"]) != 2 || got["SYNX-AFF-X"][1] != netip.MustParseAddr("10.210.0.3") {
		t.Errorf("lists %v", got)
	}
	if l, err := recentLists(filepath.Join(dir, "absent")); err != nil || l != nil {
		t.Errorf("absent directory: %v %v", l, err)
	}
}
