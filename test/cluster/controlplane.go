package cluster

import (
	"context"
	"path/filepath"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/synterix/synterix-kube-proxy/test/clusternet"
	"github.com/synterix/synterix-kube-proxy/test/controlplane"
	"github.com/synterix/synterix-kube-proxy/test/testenv"
)

// Addresses of the cluster network (test/clusternet), for the callers of
// this package.
const (
	ClientIP      = clusternet.ClientIP
	APIServerIP   = clusternet.APIServerIP
	APIServerPort = clusternet.APIServerPort
)

// startControlPlane starts etcd and kube-apiserver in the control-plane
// namespace (test/controlplane, without controllers: the harness plays
// kubelet and the EndpointSlice controller) and connects the admin clients.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	c.Plane = &controlplane.ControlPlane{
		Dir: c.Dir, LogDir: c.LogDir, Bin: c.opts.K8sBin, NS: c.CP, Detach: c.opts.Keep,
	}
	if err := c.Plane.Start(ctx); err != nil {
		return err
	}
	c.Kubeconfig, c.RESTConfig = c.Plane.AdminKubeconfig, c.Plane.RESTConfig
	var err error
	if c.Kube, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
		return err
	}
	c.Client, err = client.New(c.RESTConfig, client.Options{Scheme: testenv.Scheme()})
	return err
}

// serviceAccountKubeconfig writes a kubeconfig with a token of the
// ServiceAccount (as kubelet would mount for a pod) and returns its path.
func (c *Cluster) serviceAccountKubeconfig(ctx context.Context, namespace, sa, name string) (string, error) {
	path := filepath.Join(c.Dir, name+".kubeconfig")
	return path, c.Plane.ServiceAccountKubeconfig(ctx, namespace, sa, path)
}
