package daemon

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// NewEventRecorder returns a recorder that posts Events as
// "synterix-agent" on this node, and the function that stops it. The
// broadcaster aggregates and rate-limits repeated Events.
func NewEventRecorder(ctx context.Context, cs kubernetes.Interface, nodeName string) (record.EventRecorder, func()) {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = v1alpha1.AddToScheme(scheme)
	bc := record.NewBroadcaster(record.WithContext(ctx))
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return bc.NewRecorder(scheme, corev1.EventSource{Component: "synterix-agent", Host: nodeName}), bc.Shutdown
}
