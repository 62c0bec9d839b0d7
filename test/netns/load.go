package netns

import (
	"fmt"
	"sync"
	"time"
)

// Load runs probes in loops until Stop: a probe is one unit of traffic (a
// stream's Ping, a new connection) that returns an error when it went
// wrong. Load counts successes and failures per group and keeps every
// failure with its time and the phase it fell in, so that a failing test
// can match them against the logs of the parts it disrupted.
type Load struct {
	mu       sync.Mutex
	phase    string
	ok, bad  map[string]int64
	failures []string
	first    error
	stop     chan struct{}
	wg       sync.WaitGroup
}

// NewLoad returns a Load with no probes, in phase "start".
func NewLoad() *Load {
	return &Load{phase: "start", ok: map[string]int64{}, bad: map[string]int64{}, stop: make(chan struct{})}
}

// Run starts calling probe, with pause between calls, until Stop. Its
// results count towards group; name says what it does in failures.
func (l *Load) Run(group, name string, pause time.Duration, probe func() error) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			err := probe()
			l.mu.Lock()
			if err != nil {
				l.bad[group]++
				if l.first == nil {
					l.first = err
				}
				l.failures = append(l.failures, fmt.Sprintf("%s %s (%s): %v",
					time.Now().UTC().Format("15:04:05.000000"), name, l.phase, err))
			} else {
				l.ok[group]++
			}
			l.mu.Unlock()
			select {
			case <-l.stop:
				return
			case <-time.After(pause):
			}
		}
	}()
}

// SetPhase names what happens from now on, for the failures.
func (l *Load) SetPhase(phase string) {
	l.mu.Lock()
	l.phase = phase
	l.mu.Unlock()
}

// Stop ends every probe loop and waits for them.
func (l *Load) Stop() {
	close(l.stop)
	l.wg.Wait()
}

// Count returns the successes and failures of a group so far.
func (l *Load) Count(group string) (ok, failed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok[group], l.bad[group]
}

// FirstError is the first failure, or nil.
func (l *Load) FirstError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// Failures lists every failure as "hh:mm:ss.micro (UTC) name (phase): error".
func (l *Load) Failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.failures...)
}
