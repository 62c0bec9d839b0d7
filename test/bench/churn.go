package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Churn writes EndpointSlice changes to random bulk Services at a steady
// rate, as the EndpointSlice controller does while Deployments roll: each
// write moves one endpoint of one Service to another address of the sink.
type Churn struct {
	cancel context.CancelFunc
	done   chan struct{}
	start  time.Time
	mu     sync.Mutex
	writes int
	err    error
}

// StartChurn starts writing rate changes per second to bulk Services
// 0…n-1. The churn of one run continues from where the last one left off:
// the generation of each Service's endpoints is kept in the Cluster.
func (cl *Cluster) StartChurn(n int, rate float64) *Churn {
	ctx, cancel := context.WithCancel(context.Background())
	ch := &Churn{cancel: cancel, done: make(chan struct{}), start: time.Now()}
	if cl.gen == nil {
		cl.gen = map[int]int{}
	}
	go func() {
		defer close(ch.done)
		tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			i := rand.IntN(n)
			cl.gen[i]++
			_, err := cl.SetEndpoints(ctx, bulkName(i), bulkEndpoints(i, cl.gen[i])...)
			ch.mu.Lock()
			if err == nil {
				ch.writes++
			} else if ch.err == nil && ctx.Err() == nil {
				ch.err = err
			}
			ch.mu.Unlock()
		}
	}()
	return ch
}

// Stop ends the churn and returns the writes made, over how long, and the
// first write error.
func (ch *Churn) Stop() (int, time.Duration, error) {
	ch.cancel()
	<-ch.done
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.writes, time.Since(ch.start), ch.err
}

// auditEvent is the part of an audit log line the harness reads.
type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource string `json:"resource"`
	} `json:"objectRef"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
}

// Requests counts the requests the API server received from user: in all,
// by verb and resource, and within [from, to) when to is not zero.
func (cl *Cluster) Requests(user string, from, to time.Time) (total int, byKind map[string]int, window int, err error) {
	f, err := os.Open(cl.auditLog)
	if err != nil {
		return 0, nil, 0, err
	}
	defer f.Close()
	byKind = map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), `"`+user+`"`) {
			continue
		}
		var ev auditEvent
		if json.Unmarshal(line, &ev) != nil || ev.User.Username != user || ev.Stage != "RequestReceived" {
			continue
		}
		total++
		byKind[ev.Verb+" "+ev.ObjectRef.Resource]++
		if !to.IsZero() && !ev.RequestReceived.Before(from) && ev.RequestReceived.Before(to) {
			window++
		}
	}
	return total, byKind, window, sc.Err()
}

// apiRequests records the API server's requests from this run's identity
// (both processes), those of the idle window, and the bytes the contender
// received from the API server.
func (r *run) apiRequests() {
	total, byKind, idle, err := r.h.cl.Requests(r.user, r.idleFrom, r.idleTo)
	if err != nil {
		r.add("api_requests_total", 0, 0, "", StatusFailed, err.Error())
		return
	}
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s=%d", k, byKind[k]))
	}
	r.add("api_requests_total", 0, float64(total), "requests", "", strings.Join(parts, "; "))
	if !r.idleTo.IsZero() {
		r.add("idle_api_requests", 0, float64(idle), "requests", "", fmt.Sprintf("over %s", r.idleTo.Sub(r.idleFrom).Round(time.Second)))
	}
	if r.top != nil && r.top.Fwd != nil {
		r.add("api_received_mib", 0, float64(r.top.Fwd.Down.Load())/(1<<20), "MiB", "", "bytes from the API server through the node's forwarder (TLS)")
	}
	logf(r.t, "  API requests: %d (%s); idle %d", total, strings.Join(parts, "; "), idle)
}
