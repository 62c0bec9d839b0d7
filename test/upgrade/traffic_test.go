package upgrade

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// loadPause is the pause between two probes of one loop (as the e2e
// suite's disruption specs).
const loadPause = 20 * time.Millisecond

// traffic is the live load of the whole test: from every client (each
// node's network namespace and a pod's) a long-lived TCP stream to the
// Service's ClusterIP that pings every loadPause, and new connections to
// it in a loop. It runs from before the upgrade until after the
// downgrade; counts are taken per phase.
type traffic struct {
	hub     *netns.NS
	load    *netns.Load
	streams []*netns.Stream
	start   time.Time
	once    sync.Once
}

// source is one place traffic leaves from.
type source struct {
	name string
	ns   *netns.NS
}

// counts are the load's totals at one moment, and the hub's counters.
type counts struct{ pings, pingFails, conns, connFails, escaped, unreachable int64 }

func (c counts) minus(o counts) counts {
	return counts{c.pings - o.pings, c.pingFails - o.pingFails, c.conns - o.conns, c.connFails - o.connFails,
		c.escaped - o.escaped, c.unreachable - o.unreachable}
}

func (c counts) String() string {
	return fmt.Sprintf("stream pings ok=%d failed=%d, new connections ok=%d failed=%d; at the hub: %d packets to Service addresses (untranslated), %d ICMP net unreachable sent",
		c.pings, c.pingFails, c.conns, c.connFails, c.escaped, c.unreachable)
}

// startTraffic opens a stream from every client to vip and starts the
// loops; a client that cannot open its stream is an error.
func startTraffic(hub *netns.NS, vip string, clients []source) (*traffic, error) {
	if err := countAtHub(hub); err != nil {
		return nil, err
	}
	tr := &traffic{hub: hub, load: netns.NewLoad(), start: time.Now()}
	for _, c := range clients {
		s, err := c.ns.OpenStream(vip, netns.RequestOptions{})
		if err != nil {
			tr.stop()
			return nil, fmt.Errorf("stream from %s to %s: %w", c.name, vip, err)
		}
		tr.streams = append(tr.streams, s)
		tr.load.Run("pings", "stream ping from "+c.name+" to "+vip+" (server "+s.Greeting.Server+")", loadPause, s.Ping)
		tr.load.Run("conns", "new connection from "+c.name+" to "+vip, loadPause, func() error {
			_, err := c.ns.Request("tcp", vip, netns.RequestOptions{})
			return err
		})
	}
	tr.load.SetPhase("steady, N-1")
	return tr, nil
}

// phase names what happens from now on (failures carry it).
func (tr *traffic) phase(p string) { tr.load.SetPhase(p) }

func (tr *traffic) counts() counts {
	var c counts
	c.pings, c.pingFails = tr.load.Count("pings")
	c.conns, c.connFails = tr.load.Count("conns")
	c.escaped, c.unreachable = hubCounts(tr.hub)
	return c
}

// failures lists every failure so far, with its time and phase.
func (tr *traffic) failures() string { return strings.Join(tr.load.Failures(), "\n") }

// stop ends the loops and closes the streams; later calls do nothing.
func (tr *traffic) stop() {
	tr.once.Do(func() {
		tr.load.Stop()
		for _, s := range tr.streams {
			s.Close()
		}
	})
}

// The hub counts, in its own raw table, packets for Service addresses that
// reach it (a node let them out untranslated) and the ICMP net unreachable
// it answers them with, which a sender's connect() returns as ENETUNREACH;
// as the e2e suite's disruption specs (docs/testing.md), so that a failure
// says which path let a packet through.
const (
	hubEscaped     = "synx-upgrade: Service address reached the hub untranslated"
	hubUnreachable = "synx-upgrade: ICMP net unreachable sent by the hub"
)

// countAtHub installs the hub's counting rules.
func countAtHub(hub *netns.NS) error {
	return hub.Run(
		[]string{"iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-d", clusternet.ServiceCIDR, "-m", "comment", "--comment", hubEscaped},
		[]string{"iptables", "-w", "-t", "raw", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "network-unreachable", "-m", "comment", "--comment", hubUnreachable},
	)
}

var hubCounterRE = regexp.MustCompile(`^\[(\d+):\d+\]`)

// hubCounts reads the hub's counters: packets escaped, net unreachable sent.
func hubCounts(hub *netns.NS) (escaped, unreachable int64) {
	out, err := hub.Exec("iptables-save", "-c", "-t", "raw")
	if err != nil {
		return -1, -1
	}
	for _, l := range strings.Split(out, "\n") {
		m := hubCounterRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		switch {
		case strings.Contains(l, hubEscaped):
			escaped = n
		case strings.Contains(l, hubUnreachable):
			unreachable = n
		}
	}
	return escaped, unreachable
}

// captureOnFailure watches the load and, at each new failure, saves what
// the failing client's namespace holds right then: the TCP conntrack
// entries to the Service address still in SYN_SENT (an untranslated one
// shows the ClusterIP as its reply source) and the size of its nat rules.
// It returns what it captured when stop is called.
func (tr *traffic) captureOnFailure(vip string, sources []source) (stop func() []string) {
	done := make(chan struct{})
	var out []string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		seen := 0
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			failures := tr.load.Failures()
			for _, f := range failures[seen:] {
				out = append(out, capture(f, vip, sources))
			}
			seen = len(failures)
		}
	}()
	return func() []string {
		close(done)
		wg.Wait()
		return out
	}
}

// capture describes the namespace of the source a failure names.
func capture(failure, vip string, sources []source) string {
	ip, _, _ := strings.Cut(vip, ":")
	for _, s := range sources {
		if !strings.Contains(failure, "from "+s.name+" to") {
			continue
		}
		ct, err := s.ns.Exec("conntrack", "-L", "-p", "tcp", "-d", ip, "--state", "SYN_SENT")
		nat, _ := s.ns.Exec("sh", "-c", "iptables-save -t nat | grep -c -- '^-A'")
		return fmt.Sprintf("%s\n  captured at %s in %s: %s rules in nat; conntrack SYN_SENT to %s (err %v):\n%s",
			failure, time.Now().UTC().Format("15:04:05.000"), s.name, strings.TrimSpace(nat), ip, err, ct)
	}
	return failure + "\n  (no namespace to capture)"
}
