package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// ProxyNodeReconciler removes ProxyNodes that nothing should keep: those whose
// Node is gone (the garbage collector does it too, through the ownerReference to
// the Node; this covers clusters where it lags, and test clusters without one),
// and those whose GatewayConfig is gone without its finalizer having run. It
// never writes a ProxyNode's status: that is the agent's.
type ProxyNodeReconciler struct {
	client.Client
	// APIReader reads past the cache, to confirm that a Node or GatewayConfig
	// is really gone before deleting anything.
	APIReader client.Reader
}

// Reconcile checks one ProxyNode.
func (r *ProxyNodeReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pn := &proxyv1alpha1.ProxyNode{}
	if err := r.Get(ctx, req.NamespacedName, pn); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pn.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	reason := ""
	if gone, err := r.gone(ctx, types.NamespacedName{Name: pn.Name}, &corev1.Node{}); err != nil {
		return ctrl.Result{}, err
	} else if gone {
		reason = "node is gone"
	} else if gone, err := r.gone(ctx, types.NamespacedName{Name: pn.Spec.GatewayConfig}, &proxyv1alpha1.GatewayConfig{}); err != nil {
		return ctrl.Result{}, err
	} else if gone {
		reason = "GatewayConfig is gone"
	}
	if reason == "" {
		return ctrl.Result{}, nil
	}
	if err := r.Delete(ctx, pn, client.Preconditions{UID: &pn.UID, ResourceVersion: &pn.ResourceVersion}); client.IgnoreNotFound(err) != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{RequeueAfter: conflictRetry}, nil
		}
		return ctrl.Result{}, err
	}
	proxyNodeWrites.WithLabelValues("delete").Inc()
	logf.FromContext(ctx).Info("Deleted orphan ProxyNode", "reason", reason)
	return ctrl.Result{}, nil
}

// gone reports whether an object is missing from the cache and, to be sure,
// from the API server.
func (r *ProxyNodeReconciler) gone(ctx context.Context, key types.NamespacedName, obj client.Object) (bool, error) {
	err := r.Get(ctx, key, obj)
	if err == nil || !apierrors.IsNotFound(err) {
		return false, err
	}
	if r.APIReader == nil {
		return true, nil
	}
	err = r.APIReader.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	return false, err
}

// SetupWithManager registers the reconciler: it looks at a ProxyNode when it is
// created or its spec changes, and when its Node or a GatewayConfig goes.
func (r *ProxyNodeReconciler) SetupWithManager(mgr ctrl.Manager) error {
	onDelete := predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		UpdateFunc:  func(event.UpdateEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
	}
	nodeGone := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: o.GetName()}}}
	})
	configGone := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		var pns proxyv1alpha1.ProxyNodeList
		if err := mgr.GetClient().List(ctx, &pns, client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(o.GetName())}); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(pns.Items))
		for _, pn := range pns.Items {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: pn.Name}})
		}
		return out
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&proxyv1alpha1.ProxyNode{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Node{}, nodeGone, builder.WithPredicates(onDelete)).
		Watches(&proxyv1alpha1.GatewayConfig{}, configGone, builder.WithPredicates(onDelete)).
		Named("proxynode").
		Complete(r)
}
