package upgrade

import (
	"fmt"
	"strings"
	"sync"
	"time"

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

// counts are the load's totals at one moment.
type counts struct{ pings, pingFails, conns, connFails int64 }

func (c counts) minus(o counts) counts {
	return counts{c.pings - o.pings, c.pingFails - o.pingFails, c.conns - o.conns, c.connFails - o.connFails}
}

func (c counts) String() string {
	return fmt.Sprintf("stream pings ok=%d failed=%d, new connections ok=%d failed=%d", c.pings, c.pingFails, c.conns, c.connFails)
}

// startTraffic opens a stream from every client to vip and starts the
// loops; a client that cannot open its stream is an error.
func startTraffic(vip string, clients []source) (*traffic, error) {
	tr := &traffic{load: netns.NewLoad(), start: time.Now()}
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
