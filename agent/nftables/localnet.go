package nftables

import (
	"os"
	"strings"

	"k8s.io/klog/v2"
)

const routeLocalnet = "/proc/sys/net/ipv4/conf/all/route_localnet"

// localnet sets net.ipv4.conf.all.route_localnet, which lets DNAT send
// 127.0.0.1 NodePort traffic off the host, and remembers the value it
// found so that Cleanup puts it back.
type localnet struct {
	set bool
	was string
}

func (l *localnet) enable() {
	old, err := os.ReadFile(routeLocalnet)
	if err != nil {
		klog.ErrorS(err, "Cannot read route_localnet; localhost NodePorts will not work")
		return
	}
	if strings.TrimSpace(string(old)) == "1" {
		return
	}
	if err := os.WriteFile(routeLocalnet, []byte("1"), 0o644); err != nil {
		klog.ErrorS(err, "Cannot enable route_localnet; localhost NodePorts will not work")
		return
	}
	if !l.set {
		l.set, l.was = true, strings.TrimSpace(string(old))
	}
}

func (l *localnet) restore() error {
	if !l.set {
		return nil
	}
	l.set = false
	return os.WriteFile(routeLocalnet, []byte(l.was), 0o644)
}
