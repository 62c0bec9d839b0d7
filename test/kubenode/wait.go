package kubenode

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// WaitNodesReady waits until every node has registered and is Ready. It
// plays the cluster's IPAM: once a Node object appears, it sets the Node's
// podCIDRs (one per family) to those the node's CNI network was written for
// (the controller manager's allocator would pick in registration order
// instead).
func (c *Cluster) WaitNodesReady(ctx context.Context, timeout time.Duration) error {
	return poll.Until(ctx, timeout, "Nodes Ready", func(ctx context.Context) (bool, string, error) {
		var state []string
		ready := 0
		for _, n := range c.Nodes {
			if !n.Kubelet.Running() {
				return false, "", fmt.Errorf("kubelet of %s exited: see %s", n.Name, n.Kubelet.LogPath)
			}
			node, err := c.Kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				state = append(state, n.Name+": not registered")
				continue
			} else if err != nil {
				state = append(state, n.Name+": "+err.Error())
				continue
			}
			if node.Spec.PodCIDR == "" {
				cidrs, _ := json.Marshal(n.PodCIDRs())
				patch := fmt.Sprintf(`{"spec":{"podCIDR":%q,"podCIDRs":%s}}`, n.PodCIDR, cidrs)
				if _, err := c.Kube.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					return false, "", fmt.Errorf("set podCIDRs of %s: %w", n.Name, err)
				}
			} else if !slices.Equal(node.Spec.PodCIDRs, n.PodCIDRs()) {
				return false, "", fmt.Errorf("node %s has podCIDRs %v, its CNI network is %v", n.Name, node.Spec.PodCIDRs, n.PodCIDRs())
			}
			cond := nodeCondition(node, corev1.NodeReady)
			if cond != nil && cond.Status == corev1.ConditionTrue {
				ready++
				continue
			}
			if cond != nil {
				state = append(state, fmt.Sprintf("%s: %s %s", n.Name, cond.Reason, cond.Message))
			} else {
				state = append(state, n.Name+": no Ready condition")
			}
		}
		return ready == len(c.Nodes), strings.Join(state, "; "), nil
	})
}

func nodeCondition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// WaitPodReady waits until the pod runs with every container ready, and
// returns it; it fails early when the pod failed or a container cannot
// start (an image that is not on the node, a crash loop).
func (c *Cluster) WaitPodReady(ctx context.Context, ns, name string, timeout time.Duration) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := poll.Until(ctx, timeout, "pod "+ns+"/"+name+" Ready", func(ctx context.Context) (bool, string, error) {
		p, err := c.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pod = p
		if p.Status.Phase == corev1.PodFailed {
			return false, "", fmt.Errorf("pod failed: %s %s", p.Status.Reason, p.Status.Message)
		}
		var waiting []string
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				if w.Reason == "ErrImageNeverPull" || w.Reason == "CrashLoopBackOff" || w.Reason == "CreateContainerError" {
					return false, "", fmt.Errorf("container %s: %s: %s", cs.Name, w.Reason, w.Message)
				}
				waiting = append(waiting, cs.Name+": "+w.Reason+" "+w.Message)
			}
		}
		state := fmt.Sprintf("phase %s node %q ip %q %v", p.Status.Phase, p.Spec.NodeName, p.Status.PodIP, waiting)
		for _, cond := range p.Status.Conditions {
			if cond.Status != corev1.ConditionTrue {
				state += fmt.Sprintf("; %s: %s %s", cond.Type, cond.Reason, cond.Message)
			}
		}
		return p.Status.Phase == corev1.PodRunning && podReady(p), state, nil
	})
	return pod, err
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
