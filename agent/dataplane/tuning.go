package dataplane

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/conntrack"
	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// conntrackTuning is the conntrack tuning of a revision; zero fields keep
// the kernel's values.
func conntrackTuning(c *v1alpha1.ConntrackConfig) conntrack.Tuning {
	var t conntrack.Tuning
	if c == nil {
		return t
	}
	if c.MaxPerCore != nil {
		t.MaxPerCore = int64(*c.MaxPerCore)
	}
	if c.Min != nil {
		t.Min = int64(*c.Min)
	}
	if c.TCPEstablishedTimeout != nil {
		t.TCPEstablishedTimeout = c.TCPEstablishedTimeout.Duration
	}
	if c.TCPCloseWaitTimeout != nil {
		t.TCPCloseWaitTimeout = c.TCPCloseWaitTimeout.Duration
	}
	if c.UDPTimeout != nil {
		t.UDPTimeout = c.UDPTimeout.Duration
	}
	if c.UDPStreamTimeout != nil {
		t.UDPStreamTimeout = c.UDPStreamTimeout.Duration
	}
	return t
}

// Tune applies the conntrack tuning of a revision in the node's network
// namespace, once per revision and generation (key). A failure is logged
// and posted as a Warning Event; it does not stop the sync.
func (p *Plane) Tune(key string, c *v1alpha1.ConntrackConfig) {
	t := conntrackTuning(c)
	if p.tuned == key {
		return
	}
	p.tuned = key
	if t == (conntrack.Tuning{}) {
		return
	}
	var applied []string
	var terr error
	if err := p.opts.InNetNS(func() error {
		applied, terr = conntrack.Tune(t)
		return nil
	}); err != nil {
		terr = err
	}
	if len(applied) > 0 {
		klog.InfoS("Conntrack tuned", "revision", key, "set", applied)
	}
	if terr != nil {
		klog.ErrorS(terr, "Conntrack tuning not fully applied; syncing goes on", "revision", key)
		p.opts.Event(corev1.EventTypeWarning, v1alpha1.ReasonConntrackTuningFailed, fmt.Sprintf("%v", terr))
	}
}
