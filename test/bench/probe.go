package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// answer makes one TCP connection from ns to target and returns who
// answered (the backend's address), or an error.
func answer(ns *netns.NS, target string, timeout time.Duration) (string, error) {
	r, err := ns.Request("tcp", target, netns.RequestOptions{Timeout: timeout})
	if err != nil {
		return "", err
	}
	return r.Server, nil
}

// waitAnswer connects from ns to target every step until want(answer) holds,
// and returns when that answer came; ctx bounds the wait.
func waitAnswer(ctx context.Context, ns *netns.NS, target string, step time.Duration, want func(string) bool) (time.Time, error) {
	for {
		got, err := answer(ns, target, 200*time.Millisecond)
		if err == nil && want(got) {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(step):
		}
	}
}

// is returns a predicate that holds for one answer.
func is(id string) func(string) bool { return func(s string) bool { return s == id } }

var sinkPrefix = netip.MustParsePrefix(sinkRange)

// inSink holds for an answer of the sink, i.e. of a bulk endpoint.
func inSink(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && sinkPrefix.Contains(a)
}

// dialTime times one TCP handshake from ns to target: the SYN is the first
// packet of a new connection, so it crosses every Service rule on its way;
// the handshake ends with the backend's SYN-ACK. It then reads who answered.
func dialTime(ns *netns.NS, target string) (time.Duration, string, error) {
	var conn net.Conn
	var d time.Duration
	err := ns.Do(func() error {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp4", target, time.Second)
		d = time.Since(t0)
		conn = c
		return err
	})
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	b, err := io.ReadAll(conn)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, "", err
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(string(b), "id="), " ")
	return d, id, nil
}

// Prober connects to a target every interval from a namespace until
// stopped, counting answers and failures, and notes when the answer first
// became a wanted one after Expect.
type Prober struct {
	ns       *netns.NS
	target   string
	interval time.Duration
	mu       sync.Mutex
	ok, fail int
	firstErr string
	want     string
	since    time.Time
	got      time.Time
	gotCh    chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

// StartProber starts probing target from ns.
func StartProber(ns *netns.NS, target string, interval time.Duration) *Prober {
	p := &Prober{ns: ns, target: target, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *Prober) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-time.After(p.interval):
		}
		got, err := answer(p.ns, p.target, time.Second)
		now := time.Now()
		p.mu.Lock()
		if err != nil || (got != backendA && got != backendB) {
			p.fail++
			if p.firstErr == "" {
				p.firstErr = now.Format("15:04:05.000") + " " + netns.Outcome(err) + " " + got
			}
		} else {
			p.ok++
			if p.want != "" && got == p.want && p.got.IsZero() {
				p.got = now
				close(p.gotCh)
			}
		}
		p.mu.Unlock()
	}
}

// Expect starts watching for the first answer by want.
func (p *Prober) Expect(want string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want, p.got, p.gotCh = want, time.Time{}, make(chan struct{})
	return p.gotCh
}

// Stop ends the probing and returns the counts, the first failure and when
// the wanted answer first came (zero if it never did).
func (p *Prober) Stop() (ok, fail int, firstErr string, got time.Time) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ok, p.fail, p.firstErr, p.got
}
