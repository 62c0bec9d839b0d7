package ipvs

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Schedulers the backend accepts, by IPVS name.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh"}

// schedulerFor maps a model algorithm to an IPVS scheduler. ok is false
// for algorithms IPVS has no scheduler for (Random).
func schedulerFor(a model.Algorithm, def string) (string, bool) {
	switch a {
	case model.AlgorithmDefault:
		return def, true
	case model.AlgorithmRoundRobin:
		return "rr", true
	case model.AlgorithmWeightedRoundRobin:
		return "wrr", true
	case model.AlgorithmLeastConnections:
		return "lc", true
	case model.AlgorithmWeightedLeastConnections:
		return "wlc", true
	case model.AlgorithmSourceHashing:
		return "sh", true
	case model.AlgorithmDestinationHashing:
		return "dh", true
	case model.AlgorithmMaglev:
		return "mh", true
	case model.AlgorithmShortestExpectedDelay:
		return "sed", true
	case model.AlgorithmNeverQueue:
		return "nq", true
	}
	return "", false
}

// vsKey identifies a virtual server: address, protocol, port.
type vsKey struct {
	Addr  netip.Addr
	Proto uint16
	Port  uint16
}

func (k vsKey) String() string {
	return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Addr, k.Port), protoName(k.Proto))
}

// rsKey identifies a real server (destination) of a virtual server.
type rsKey struct {
	Addr netip.Addr
	Port uint16
}

func (k rsKey) String() string { return netip.AddrPortFrom(k.Addr, k.Port).String() }

// virtualServer is the desired state of one IPVS service.
type virtualServer struct {
	Key        vsKey
	Scheduler  string
	Persistent bool
	Timeout    uint32 // persistence timeout, seconds
	// Dests maps each real server to its weight (always 1 for now).
	Dests map[rsKey]int
	// Source is the model service key and frontend, for messages.
	Source string
	// Frontend is the model frontend this virtual server implements.
	Frontend model.Frontend
	// Local drops the frontend's traffic while it has no destination
	// (model.Service.DropsWithoutEndpoints); otherwise it is rejected.
	Local bool
}

func protoNumber(p model.Protocol) uint16 {
	switch p {
	case model.UDP:
		return unix.IPPROTO_UDP
	case model.SCTP:
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

func protoName(p uint16) string {
	switch p {
	case unix.IPPROTO_TCP:
		return "tcp"
	case unix.IPPROTO_UDP:
		return "udp"
	case unix.IPPROTO_SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto%d", p)
}

// desiredState is everything Sync derives from a model.State.
type desiredState struct {
	Servers map[vsKey]*virtualServer
	// VIPs are the addresses bound to the dummy interface (ClusterIPs,
	// load balancer IPs, external IPs that are not node addresses).
	VIPs map[netip.Addr]bool
	// Problems are frontends skipped, with the reason.
	Problems []string
}

// buildDesired turns a model state into virtual servers. It is pure.
func buildDesired(st *model.State, defaultSched string) desiredState {
	d := desiredState{Servers: map[vsKey]*virtualServer{}, VIPs: map[netip.Addr]bool{}}
	if st == nil {
		return d
	}
	nodeIPs := map[netip.Addr]bool{}
	for _, a := range st.NodeIPs {
		nodeIPs[a] = true
	}
	for _, s := range st.Services {
		sched, ok := schedulerFor(s.Algorithm, defaultSched)
		if !ok {
			d.Problems = append(d.Problems, fmt.Sprintf("%s: algorithm %s has no IPVS scheduler, using %s", s.Key, s.Algorithm, defaultSched))
			sched = defaultSched
		}
		for _, f := range s.Frontends {
			if f.Localhost {
				// IPVS does not serve 127.0.0.0/8 destinations reliably
				// (martian source after DNAT); not supported.
				d.Problems = append(d.Problems, fmt.Sprintf("%s: %s skipped: localhost NodePorts are not supported by the IPVS backend", s.Key, f))
				continue
			}
			if f.Port < 1 || f.Port > 65535 || !f.Addr.IsValid() {
				continue
			}
			k := vsKey{Addr: f.Addr, Proto: protoNumber(f.Protocol), Port: uint16(f.Port)}
			if prev, dup := d.Servers[k]; dup {
				d.Problems = append(d.Problems, fmt.Sprintf("%s: %s skipped: already served by %s", s.Key, f, prev.Source))
				continue
			}
			vs := &virtualServer{
				Key: k, Scheduler: sched, Dests: map[rsKey]int{},
				Source: s.Key, Frontend: f, Local: s.DropsWithoutEndpoints(f.Kind),
			}
			if s.Affinity.ClientIP {
				vs.Persistent = true
				t := s.Affinity.Timeout
				if t <= 0 {
					t = model.DefaultAffinityTimeout
				}
				vs.Timeout = uint32(t / time.Second)
			}
			for _, e := range s.Endpoints(f.Kind) {
				if e.Port < 1 || e.Port > 65535 || !e.Addr.IsValid() {
					continue
				}
				vs.Dests[rsKey{Addr: e.Addr, Port: uint16(e.Port)}] = 1
			}
			d.Servers[k] = vs
			if f.Kind != model.KindNodePort && !nodeIPs[f.Addr] {
				d.VIPs[f.Addr] = true
			}
		}
	}
	return d
}

// sortedKeys returns the virtual server keys in a stable order.
func sortedKeys(m map[vsKey]*virtualServer) []vsKey {
	ks := make([]vsKey, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return vsLess(ks[i], ks[j]) })
	return ks
}

func vsLess(a, b vsKey) bool {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c < 0
	}
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	return a.Port < b.Port
}

// IPVS service flags (include/uapi/linux/ip_vs.h).
const (
	svcFlagPersistent = 0x0001
	svcFlagHashed     = 0x0002
)

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// toService renders a virtual server for moby/ipvs.
func (vs *virtualServer) toService() *libipvs.Service {
	s := &libipvs.Service{
		Address:       net.IP(vs.Key.Addr.AsSlice()),
		Protocol:      vs.Key.Proto,
		Port:          vs.Key.Port,
		SchedName:     vs.Scheduler,
		AddressFamily: family(vs.Key.Addr),
		Netmask:       0xffffffff,
	}
	if vs.Key.Addr.Is6() {
		s.Netmask = 128
	}
	if vs.Persistent {
		s.Flags = svcFlagPersistent
		s.Timeout = vs.Timeout
	}
	return s
}

// keyOf reads the key of a service read from the kernel.
func keyOf(s *libipvs.Service) (vsKey, bool) {
	if s.FWMark != 0 || s.Address == nil {
		return vsKey{}, false
	}
	a, ok := netip.AddrFromSlice(s.Address)
	if !ok {
		return vsKey{}, false
	}
	return vsKey{Addr: a.Unmap(), Proto: s.Protocol, Port: s.Port}, true
}

func rsKeyOf(d *libipvs.Destination) (rsKey, bool) {
	a, ok := netip.AddrFromSlice(d.Address)
	if !ok {
		return rsKey{}, false
	}
	return rsKey{Addr: a.Unmap(), Port: d.Port}, true
}

func toDestination(k rsKey, weight int) *libipvs.Destination {
	return &libipvs.Destination{
		Address:         net.IP(k.Addr.AsSlice()),
		Port:            k.Port,
		Weight:          weight,
		ConnectionFlags: libipvs.ConnectionFlagMasq,
		AddressFamily:   family(k.Addr),
	}
}

// serviceDiffers reports whether the kernel's service needs an update to
// match the desired one.
func serviceDiffers(cur *libipvs.Service, want *virtualServer) bool {
	if cur.SchedName != want.Scheduler {
		return true
	}
	curPersistent := cur.Flags&svcFlagPersistent != 0
	if curPersistent != want.Persistent {
		return true
	}
	return want.Persistent && cur.Timeout != want.Timeout
}
