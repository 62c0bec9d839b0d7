// Package explain is the agent's account of what it programmed: for each
// Service, the desired state (frontends, every endpoint with the reason it
// is used or not), the policies, the rules or virtual servers the kernel
// holds for it read back, and whether the kernel matches (drift); a packet
// tracer over the node's real rules; and the node's drift report. It is
// served under /debug/synterix/ on the agent's secure metrics server,
// behind the same authentication and authorization (agent/secureserve).
package explain

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/daemon"
	"github.com/synterix/synterix-kube-proxy/agent/explain/report"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/agent/trace"
)

// readTimeout bounds one request's kernel reads.
const readTimeout = 30 * time.Second

// Handler serves the explanations of the agent whose snapshots snapshot
// returns. Kernel reads (iptables-save of a large ruleset is tens of
// megabytes) run one at a time; a request that cannot get its turn within
// its deadline gets 503.
func Handler(snapshot func() *daemon.Snapshot) http.Handler {
	h := &handler{snapshot: snapshot, turn: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+report.PathServices, h.services)
	mux.HandleFunc("GET "+report.PathServices+"/{namespace}/{name}", h.service)
	mux.HandleFunc("GET "+report.PathTrace, h.trace)
	mux.HandleFunc("GET "+report.PathDiff, h.diff)
	return mux
}

type handler struct {
	snapshot func() *daemon.Snapshot
	turn     chan struct{}
}

// begin returns the snapshot and a context that holds the kernel-read
// turn, or answers the request itself and returns nil.
func (h *handler) begin(w http.ResponseWriter, r *http.Request) (*daemon.Snapshot, context.Context, func()) {
	snap := h.snapshot()
	if snap == nil {
		http.Error(w, "the agent has not synced yet", http.StatusServiceUnavailable)
		return nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	select {
	case h.turn <- struct{}{}:
	case <-ctx.Done():
		cancel()
		http.Error(w, "busy: another explanation is reading the kernel", http.StatusServiceUnavailable)
		return nil, nil, nil
	}
	return snap, ctx, func() { <-h.turn; cancel() }
}

func (h *handler) services(w http.ResponseWriter, r *http.Request) {
	snap := h.snapshot()
	if snap == nil {
		http.Error(w, "the agent has not synced yet", http.StatusServiceUnavailable)
		return
	}
	write(w, nodeReport(snap))
}

func (h *handler) service(w http.ResponseWriter, r *http.Request) {
	snap, ctx, done := h.begin(w, r)
	if snap == nil {
		return
	}
	defer done()
	write(w, serviceReport(ctx, snap, r.PathValue("namespace"), r.PathValue("name")))
}

func (h *handler) diff(w http.ResponseWriter, r *http.Request) {
	snap, ctx, done := h.begin(w, r)
	if snap == nil {
		return
	}
	defer done()
	out := report.Diff{Sync: syncOf(snap)}
	for _, f := range snap.Families {
		fd := report.FamilyDiff{Family: string(f.Family), Programmed: f.State != nil, Backend: string(snap.Backend)}
		if f.State != nil {
			if v, err := readView(ctx, snap, f.Family); err != nil {
				fd.Error = err.Error()
			} else {
				fd.Differences, fd.Compared = v.diff(f.State, "")
				fd.InSync = len(fd.Differences) == 0
			}
		}
		out.Families = append(out.Families, fd)
	}
	write(w, out)
}

func (h *handler) trace(w http.ResponseWriter, r *http.Request) {
	pkt, err := packetOf(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	snap, ctx, done := h.begin(w, r)
	if snap == nil {
		return
	}
	defer done()
	fam := model.IPv4
	if pkt.Dst.Is6() {
		fam = model.IPv6
	}
	v, err := readView(ctx, snap, fam)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if r.URL.Query().Get("fromNode") == "" {
		pkt.FromNode = isLocal(v.tracer(), pkt.Src)
	}
	res, err := v.tracer().Trace(pkt)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	write(w, report.Trace{Sync: syncOf(snap), Family: string(fam), Result: res, Summary: res.Summary()})
}

// isLocal reports whether a source address is the node's own: its packets
// take the output path.
func isLocal(t trace.Tracer, a netip.Addr) bool {
	var env *trace.Env
	switch t := t.(type) {
	case *trace.IPTables:
		env = &t.Env
	case *trace.IPVS:
		env = &t.Env
	case *trace.NFTables:
		env = &t.Env
	}
	if env == nil {
		return false
	}
	if a.IsLoopback() {
		return true
	}
	for _, l := range env.LocalAddrs {
		if l == a {
			return true
		}
	}
	return false
}

// packetOf reads ?src=IP&dst=IP&port=N[&proto=tcp][&srcPort=N][&fromNode=true].
func packetOf(r *http.Request) (trace.Packet, error) {
	q := r.URL.Query()
	p := trace.Packet{Proto: strings.ToLower(q.Get("proto"))}
	if p.Proto == "" {
		p.Proto = "tcp"
	}
	var err error
	if p.Src, err = netip.ParseAddr(q.Get("src")); err != nil {
		return p, fmt.Errorf("src: want an IP address: %w", err)
	}
	if p.Dst, err = netip.ParseAddr(q.Get("dst")); err != nil {
		return p, fmt.Errorf("dst: want an IP address: %w", err)
	}
	for name, dst := range map[string]*uint16{"port": &p.DstPort, "srcPort": &p.SrcPort} {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				return p, fmt.Errorf("%s: want a port number: %w", name, err)
			}
			*dst = uint16(n)
		}
	}
	if v := q.Get("fromNode"); v != "" {
		if p.FromNode, err = strconv.ParseBool(v); err != nil {
			return p, fmt.Errorf("fromNode: %w", err)
		}
	}
	p.Src, p.Dst = p.Src.Unmap(), p.Dst.Unmap()
	return p, p.Validate()
}

func write(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		klog.V(2).InfoS("Failed to write an explanation", "err", err)
	}
}
