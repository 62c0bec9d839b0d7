package nftables

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/backend"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// TestIPv6: the backend programs an ip6 table from an IPv6 state with the
// same code: ClusterIP balancing, NodePort with masquerade, REJECT without
// endpoints; and the ip and ip6 tables of two backends live side by side,
// each Cleanup removing its own. test/netns serves IPv4 only, so the test
// runs its own small IPv6 servers.
func TestIPv6(t *testing.T) {
	netns.Require(t, "nft")
	node, client, b1 := netns.New(t, "node6"), netns.New(t, "client6"), netns.New(t, "b6")
	netns.Veth(t, node, "to-client", client, "eth0")
	netns.Veth(t, node, "to-b1", b1, "eth0")
	node.MustExec("ip", "addr", "add", "fd00:210::1/64", "dev", "to-client", "nodad")
	client.MustExec("ip", "addr", "add", "fd00:210::2/64", "dev", "eth0", "nodad")
	client.MustExec("ip", "-6", "route", "add", "default", "via", "fd00:210::1")
	node.MustExec("ip", "addr", "add", "fd00:211::1/64", "dev", "to-b1", "nodad")
	for _, a := range []string{"fd00:211::2", "fd00:211::3"} {
		b1.MustExec("ip", "addr", "add", a+"/64", "dev", "eth0", "nodad")
		serve6(t, b1, "["+a+"]:8080")
	}
	b1.MustExec("ip", "-6", "route", "add", "default", "via", "fd00:211::1")
	node.Sysctl("net.ipv6.conf.all.forwarding", "1")
	// Like a real node, a default route: what is not DNATed is forwarded
	// (to a neighbour that never answers) and meets the filter chains.
	node.MustExec("ip", "-6", "route", "add", "default", "via", "fd00:211::ff")

	st := ipv6State()
	var be6, be4 *Backend
	if err := node.Do(func() (err error) {
		if be6, err = New(Options{Family: model.IPv6}); err != nil {
			return err
		}
		if _, err = be6.Sync(context.Background(), st, backend.SyncOptions{}); err != nil {
			return err
		}
		// An IPv4 backend beside it, as on a dual-stack node.
		if be4, err = New(Options{}); err != nil {
			return err
		}
		_, err = be4.Sync(context.Background(), &model.State{Family: model.IPv4}, backend.SyncOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for i := 0; i < 40; i++ {
		id, _, err := request6(client, "[fd00:96::10]:80")
		if err != nil {
			t.Fatalf("ClusterIP: %v", err)
		}
		got[id]++
	}
	if len(got) != 2 || got["[fd00:211::2]:8080"] < 5 || got["[fd00:211::3]:8080"] < 5 {
		t.Errorf("ClusterIP distribution over two endpoints: %v", got)
	}
	if _, from, err := request6(client, "[fd00:210::1]:30080"); err != nil || !strings.HasPrefix(from, "[fd00:211::1]:") {
		t.Errorf("NodePort: seen from %s (%v), want the node's address (masquerade)", from, err)
	}
	// No endpoints: TCP is refused with a reset (a Linux TCP client over
	// IPv6 does not give up its SYN on an ICMPv6 port unreachable).
	if _, _, err := request6(client, "[fd00:96::11]:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("no endpoints: %v, want the connection refused", err)
	}
	if res := syncIn(t, node, be6, st, true); res.Rules != 0 {
		t.Errorf("full resync of the same state wrote %d", res.Rules)
	}
	if err := node.Do(func() error { return be6.Cleanup(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	tables := node.MustExec("nft", "list", "tables")
	if strings.Contains(tables, "ip6 "+DefaultTable) || !strings.Contains(tables, "table ip "+DefaultTable) {
		t.Errorf("after the IPv6 backend's Cleanup: %s, want only the ip table", tables)
	}
}

func syncIn(t *testing.T, ns *netns.NS, be *Backend, st *model.State, full bool) (res backend.SyncResult) {
	t.Helper()
	if err := ns.Do(func() (err error) {
		res, err = be.Sync(context.Background(), st, backend.SyncOptions{Full: full})
		return
	}); err != nil {
		t.Fatal(err)
	}
	return res
}

func ipv6State() *model.State {
	eps := []model.Endpoint{
		{Addr: netip.MustParseAddr("fd00:211::2"), Port: 8080, Ready: true},
		{Addr: netip.MustParseAddr("fd00:211::3"), Port: 8080, Ready: true},
	}
	return &model.State{Family: model.IPv6, Local: model.LocalTraffic{CIDRs: []netip.Prefix{netip.MustParsePrefix("fd00:211::/64")}},
		Services: []*model.Service{
			{Key: "test/web:/TCP", Namespace: "test", Name: "web", Protocol: model.TCP, Hash: "web",
				Frontends: []model.Frontend{
					{Kind: model.KindClusterIP, Addr: netip.MustParseAddr("fd00:96::10"), Port: 80, Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster},
					{Kind: model.KindNodePort, Addr: netip.MustParseAddr("fd00:210::1"), Port: 30080, Protocol: model.TCP, Masquerade: model.MasqueradeAlways},
				},
				InternalEndpoints: eps, ExternalEndpoints: eps, ClusterEndpoints: eps},
			{Key: "test/empty:/TCP", Namespace: "test", Name: "empty", Protocol: model.TCP, Hash: "empty",
				Frontends: []model.Frontend{{Kind: model.KindClusterIP, Addr: netip.MustParseAddr("fd00:96::11"), Port: 80,
					Protocol: model.TCP, Masquerade: model.MasqueradeOffCluster}}},
		}}
}

// serve6 answers every TCP connection on addr with "<addr> <client>".
func serve6(t *testing.T, ns *netns.NS, addr string) {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp6", addr); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s\n", addr, c.RemoteAddr())
			c.Close()
		}
	}()
}

// request6 connects to target from ns and returns the server's id and the
// client address it saw.
func request6(ns *netns.NS, target string) (id, from string, err error) {
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = (&net.Dialer{Timeout: time.Second}).Dial("tcp6", target)
		return
	}); err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("reply %q: %w", line, syscall.EPROTO)
	}
	return f[0], f[1], nil
}
