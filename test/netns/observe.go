package netns

import (
	"sync"
	"testing"
)

// Probe is one request a namespace sends (Request, and so Spread and
// Tally), as an Observer sees it before it is sent.
type Probe struct {
	// From is the namespace that sends it.
	From  *NS
	Proto string
	// Target is "ip:port".
	Target string
	// Local is the request's RequestOptions.Local: "", "ip", ":port" or
	// "ip:port".
	Local string
}

// Observer sees each request before it is sent, and returns what to call
// with its outcome (or nil). Packet tracers use it to check, request by
// request, that what the rules say matches what the packets did. It runs
// on the requesting goroutine, so it must not call t.Fatal.
type Observer func(p Probe) (done func(r Reply, err error))

var (
	obsMu     sync.RWMutex
	observers = map[int]Observer{}
	obsNext   int
)

// Observe makes obs see every request of every namespace of the process
// until stop is called; a test binary's TestMain installs it once.
func Observe(obs Observer) (stop func()) {
	obsMu.Lock()
	defer obsMu.Unlock()
	id := obsNext
	obsNext++
	observers[id] = obs
	return func() {
		obsMu.Lock()
		defer obsMu.Unlock()
		delete(observers, id)
	}
}

// observe calls the observers before a request and returns what to call
// after it.
func (n *NS) observe(proto, target string, opts RequestOptions) func(Reply, error) {
	obsMu.RLock()
	var dones []func(Reply, error)
	for _, o := range observers {
		if d := o(Probe{From: n, Proto: proto, Target: target, Local: opts.Local}); d != nil {
			dones = append(dones, d)
		}
	}
	obsMu.RUnlock()
	return func(r Reply, err error) {
		for _, d := range dones {
			d(r, err)
		}
	}
}

// Each test's namespaces (from New), so that an Observer finds the others
// of a request's topology by label.
var (
	ownedMu sync.Mutex
	owned   = map[testing.TB][]*NS{}
)

func register(t testing.TB, n *NS) {
	ownedMu.Lock()
	defer ownedMu.Unlock()
	if owned[t] == nil {
		t.Cleanup(func() {
			ownedMu.Lock()
			defer ownedMu.Unlock()
			delete(owned, t)
		})
	}
	owned[t] = append(owned[t], n)
}

// Label is the label New was given ("node", "client"), "" for Create.
func (n *NS) Label() string { return n.label }

// Test is the test that created the namespace with New, nil for Create.
func (n *NS) Test() testing.TB { return n.t }

// Siblings returns the namespaces New created for the same test, this one
// included, in creation order.
func (n *NS) Siblings() []*NS {
	if n.t == nil {
		return []*NS{n}
	}
	ownedMu.Lock()
	defer ownedMu.Unlock()
	return append([]*NS(nil), owned[n.t]...)
}

// ServerAddrs returns where the echo servers Serve started in this
// namespace with identity id listen, as "proto/ip:port".
func (n *NS) ServerAddrs(id string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.servers[id]...)
}

// Listening reports whether an echo server Serve started in this namespace
// listens on proto and addr ("ip:port").
func (n *NS) Listening(proto, addr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, as := range n.servers {
		for _, a := range as {
			if a == proto+"/"+addr {
				return true
			}
		}
	}
	return false
}

func (n *NS) addServer(id, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.servers == nil {
		n.servers = map[string][]string{}
	}
	n.servers[id] = append(n.servers[id], addr)
}
