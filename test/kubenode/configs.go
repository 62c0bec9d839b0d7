package kubenode

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
)

// writeConfigs writes the node's containerd config, CNI network, kubelet
// config and kubeconfig, and a resolv.conf for its pods.
func (n *Node) writeConfigs() error {
	if err := os.WriteFile(filepath.Join(n.Dir, "containerd.toml"), []byte(n.containerdConfig()), 0o644); err != nil {
		return err
	}
	cni, err := n.cniConfig()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.Dir, "cni/net.d/10-synx.conflist"), cni, 0o644); err != nil {
		return err
	}
	// Pods get no cluster DNS (there is none); a resolv.conf that names no
	// server keeps them from querying the host's.
	resolv := filepath.Join(n.Dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("# synx kubenode: no DNS\noptions ndots:1\n"), 0o644); err != nil {
		return err
	}
	cert, err := n.PKI.ClientCert(n.Name+"-kubelet", "system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	n.kubeletKubeconfig = filepath.Join(n.Dir, "kubelet.kubeconfig")
	if err := n.PKI.WriteKubeconfig(n.kubeletKubeconfig, clusternet.APIServerURL, cert); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(n.kubeletConfig(resolv), "", "  ")
	if err != nil {
		return err
	}
	n.kubeletCfg = filepath.Join(n.Dir, "kubelet.json")
	return os.WriteFile(n.kubeletCfg, cfg, 0o644)
}

// containerdConfig is containerd 1.6's config (version 2): state in the
// node's private /run, root under Dir, cgroupfs (v1) runc, the CRI plugin
// with the pause image as sandbox image and the node's CNI folder.
// restrict_oom_score_adj: this machine's root lacks CAP_SYS_RESOURCE, and
// runc cannot lower a sandbox's oom_score_adj to kubelet's -998 without it
// ("nsexec: failed to update /proc/self/oom_score_adj: Permission denied"). Plugins that
// would touch fixed host paths (opt) or need other filesystems are off.
func (n *Node) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false%s
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, filepath.Join(n.Dir, "containerd"), n.containerdSocket(), n.SandboxImage, runcBinary(), n.CNIBin, filepath.Join(n.Dir, "cni/net.d"))
}

// cniConfig is a bridge network on the node's podCIDRs with host-local
// IPAM, one range per family (the node is the pods' gateway; other nodes'
// podCIDRs are routed through their node addresses, so pod addresses are
// never translated), plus portmap for hostPort. containerd adds loopback
// itself.
func (n *Node) cniConfig() ([]byte, error) {
	var ranges [][]map[string]string
	var routes []map[string]string
	for _, c := range n.PodCIDRs() {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("node %s: podCIDR: %w", n.Name, err)
		}
		ranges = append(ranges, []map[string]string{{"subnet": p.Masked().String(), "gateway": p.Masked().Addr().Next().String()}})
		dst := "0.0.0.0/0"
		if p.Addr().Is6() {
			dst = "::/0"
		}
		routes = append(routes, map[string]string{"dst": dst})
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "synx",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  ranges,
					"routes":  routes,
					"dataDir": filepath.Join(n.Dir, "cni/ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// kubeletConfig is the kubelet's KubeletConfiguration. cgroup v1 is allowed
// (this kernel mounts v1), the cgroupfs driver matches containerd's runc,
// cgroupRoot is the node's own tree, the API is authenticated by client
// certificate and authorized by webhook, and image GC and eviction are set
// so that images that cannot be pulled again are never removed.
func (n *Node) kubeletConfig(resolv string) map[string]any {
	return map[string]any{
		"kind":                        "KubeletConfiguration",
		"apiVersion":                  "kubelet.config.k8s.io/v1beta1",
		"failCgroupV1":                false,
		"cgroupDriver":                "cgroupfs",
		"cgroupRoot":                  n.Cgroups.Path,
		"cgroupsPerQOS":               true,
		"containerRuntimeEndpoint":    "unix://" + n.containerdSocket(),
		"address":                     n.IP,
		"readOnlyPort":                0,
		"healthzBindAddress":          "127.0.0.1",
		"healthzPort":                 10248,
		"podCIDR":                     n.PodCIDR,
		"resolvConf":                  resolv,
		"failSwapOn":                  false,
		"podLogsDir":                  filepath.Join(n.Dir, "pod-logs"),
		"registerNode":                true,
		"rotateCertificates":          false,
		"serverTLSBootstrap":          false,
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%",
		},
		"shutdownGracePeriod": "0s",
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": n.PKI.CACert},
		},
		"authorization": map[string]any{"mode": "Webhook"},
		"logging":       map[string]any{"format": "text"},
	}
}

// runcBinary is a debugging knob: SYNX_KUBENODE_RUNC names another runc.
func runcBinary() string {
	if b := os.Getenv("SYNX_KUBENODE_RUNC"); b != "" {
		return fmt.Sprintf("\n        BinaryName = %q", b)
	}
	return ""
}
