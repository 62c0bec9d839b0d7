package daemon

import (
	"context"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/synterix/synterix-kube-proxy/agent/dataplane"
	"github.com/synterix/synterix-kube-proxy/agent/model"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// families are the IP families the agent knows, in the order it syncs them.
var families = []model.Family{model.IPv4, model.IPv6}

// familyLoop is one IP family's model and backend, as kube-proxy runs one
// proxier per family: each family is built and synced on its own, so one
// family's failure leaves the other's rules in place.
type familyLoop struct {
	family  model.Family
	builder *model.Builder
	plane   *dataplane.Plane
	// status is the family's part of ProxyNode status.
	status v1alpha1.FamilyStatus
	// state is the desired state last programmed, for health check ports
	// and problems.
	state *model.State
	// traceCtx holds the span of the family's sync in progress.
	traceCtx context.Context
}

// familyLoops returns the loop of every family, creating them once.
func (a *Agent) familyLoops() []*familyLoop {
	if a.loop.fams == nil {
		for _, f := range families {
			fl := &familyLoop{family: f, builder: &model.Builder{}, status: v1alpha1.FamilyStatus{Family: corev1.IPFamily(f)}}
			fl.plane = dataplane.New(a.tracedPlane(fl))
			a.loop.fams = append(a.loop.fams, fl)
		}
	}
	return a.loop.fams
}

// nodeFamilies says which families the node programs: those it has an
// address of, as kube-proxy does. A node with no address at all programs
// IPv4. The message says why a family is left out.
func nodeFamilies(n *corev1.Node) (present map[model.Family]bool, why map[model.Family]string) {
	present, why = map[model.Family]bool{}, map[model.Family]string{}
	if n != nil {
		for _, na := range n.Status.Addresses {
			if na.Type != corev1.NodeInternalIP && na.Type != corev1.NodeExternalIP {
				continue
			}
			a, err := netip.ParseAddr(strings.TrimSpace(na.Address))
			if err != nil {
				continue
			}
			if a.Unmap().Is4() {
				present[model.IPv4] = true
			} else {
				present[model.IPv6] = true
			}
		}
	}
	if len(present) == 0 {
		present[model.IPv4] = true
		why[model.IPv6] = "the node reports no address; programming IPv4 only"
	}
	for _, f := range families {
		if !present[f] && why[f] == "" {
			why[f] = "the node has no " + string(f) + " address (InternalIP or ExternalIP)"
		}
	}
	return present, why
}
