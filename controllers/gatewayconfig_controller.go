package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/controllers/selection"
)

// specHashAnnotation, on an agent DaemonSet, is the hash of what the
// operator wants of it, so that it is written only when that changes.
const specHashAnnotation = "proxy.synterix.io/spec-hash"

// liveSpecHashAnnotation, on an agent DaemonSet, is the hash of its spec as
// the API server stored it at the operator's last write: a spec that no
// longer hashes to it was changed by someone else, and is put back.
const liveSpecHashAnnotation = "proxy.synterix.io/live-spec-hash"

// The operator's RBAC (generated into config/rbac/role.yaml): exactly what
// the code uses; controllers/rbactest fails on any other verb. Reads go
// through the cache (watch; list where the API server cannot stream the
// initial list); every write is a patch but the agent DaemonSet's, which is
// replaced whole (update), so that a manual edit is undone. No
// ServiceAccount, no binding: the agents' are shipped in config/agent.
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=gatewayconfigs,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=gatewayconfigs/status,verbs=patch
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=gatewayconfigs/finalizers,verbs=update
// +kubebuilder:rbac:groups=proxy.synterix.io,resources=proxynodes,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,namespace=synterix-system,resources=controllerrevisions,verbs=get;list;watch;create;patch;delete;deletecollection
// +kubebuilder:rbac:groups=apps,namespace=synterix-system,resources=daemonsets,verbs=get;list;watch;create;update;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// GatewayConfigReconciler runs a GatewayConfig: its agent DaemonSet, its config
// revisions, the ProxyNodes of the nodes it wins and the node-by-node rollout.
type GatewayConfigReconciler struct {
	client.Client
	Scheme   *runtime.Scheme
	Recorder recorder.EventRecorder
	Agent    AgentOptions
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Tracer traces reconciles and rollout batches
	// (gatewayconfig_tracing.go); nil traces nothing.
	Tracer trace.Tracer
}

func (r *GatewayConfigReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile takes one step of a GatewayConfig towards its spec. The finalizer
// comes first; then rollOut does the step in phases and fills the status,
// which a defer writes once, only when it changed, with observedGeneration
// advanced only when the step succeeded or found the spec invalid.
func (r *GatewayConfigReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, rerr error) {
	ctx, span := r.startReconcile(ctx, req.Name)
	defer func() { endSpan(span, rerr) }()
	gc := &proxyv1alpha1.GatewayConfig{}
	if err := r.Get(ctx, req.NamespacedName, gc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !gc.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, gc)
	}
	if !controllerutil.ContainsFinalizer(gc, Finalizer) {
		patch := client.MergeFrom(gc.DeepCopy())
		controllerutil.AddFinalizer(gc, Finalizer)
		return ctrl.Result{}, r.Patch(ctx, gc, patch, FieldOwner)
	}

	orig := gc.DeepCopy()
	st := gc.Status.DeepCopy()
	computed := false
	defer func() {
		if !computed {
			return
		}
		if err := r.patchStatus(ctx, gc, orig, st); err != nil && rerr == nil {
			rerr = err
		}
	}()

	res, err := r.rollOut(ctx, gc, st)
	switch {
	case err == nil:
		computed = true
		return res, nil
	case errors.Is(err, reconcile.TerminalError(nil)):
		// The spec cannot be acted on: say so, for this generation, and wait
		// for a new one.
		computed = true
		r.invalidSpec(gc, &orig.Status, st, err)
		return ctrl.Result{}, err
	case apierrors.IsConflict(err):
		logf.FromContext(ctx).V(1).Info("Conflict, requeueing", "error", err.Error())
		return ctrl.Result{RequeueAfter: conflictRetry}, nil
	}
	return ctrl.Result{}, err
}

// rollOut takes one step of the rollout, in phases: observe the cluster (and
// snapshot the spec as a revision), plan the next assignments, apply them,
// then compute the status into st and announce what changed. st is filled
// only when every phase succeeded, so a failed step reports nothing.
func (r *GatewayConfigReconciler) rollOut(ctx context.Context, gc *proxyv1alpha1.GatewayConfig, st *proxyv1alpha1.GatewayConfigStatus) (ctrl.Result, error) {
	now := r.now()
	pctx, span := r.startPhase(ctx, "observe")
	obs, err := r.observe(pctx, gc)
	if endSpan(span, err); err != nil {
		return ctrl.Result{}, err
	}
	_, span = r.startPhase(ctx, "plan")
	pl, err := planRollout(gc, obs, st.CurrentRevision, now)
	if endSpan(span, err); err != nil {
		return ctrl.Result{}, err
	}
	pctx, span = r.startPhase(ctx, "apply")
	assigned, err := r.apply(pctx, gc, obs, pl, now)
	if endSpan(span, err); err != nil {
		return ctrl.Result{}, err
	}
	// gc.Status is still the status this step started from.
	pctx, span = r.startPhase(ctx, "status")
	before := gc.Status.DeepCopy()
	rolloutStatus(gc.Generation, st, obs, pl, assigned)
	recordRolloutMetrics(gc.Name, st)
	r.announce(pctx, gc, before, obs, pl)
	span.End()
	if pl.RequeueAfter > 0 {
		return ctrl.Result{RequeueAfter: pl.RequeueAfter}, nil
	}
	return ctrl.Result{}, nil
}

// observation is what one step reads of the cluster for a GatewayConfig.
type observation struct {
	gcName string
	// won are the nodes the GatewayConfig wins, sorted by name; lost are the
	// nodes it selects that an older GatewayConfig won.
	won  []*corev1.Node
	lost []selection.Lost
	// desired is the revision of the current spec; revs are every revision
	// of the GatewayConfig, by name.
	desired string
	revs    map[string]*appsv1.ControllerRevision
	// proxyNodes are every ProxyNode, whoever runs it; byName indexes them.
	proxyNodes []proxyv1alpha1.ProxyNode
	byName     map[string]*proxyv1alpha1.ProxyNode
	// ds is the agent DaemonSet as the cache has it; nil when there is none.
	ds *appsv1.DaemonSet
	// pods are the GatewayConfig's agent pods, by node.
	pods map[string][]*corev1.Pod
	// templates are the agent pod templates of the revisions, by name.
	templates map[string]*podTemplate
}

// own returns the ProxyNode of a node when this GatewayConfig runs it, else nil.
func (o *observation) own(node string) *proxyv1alpha1.ProxyNode {
	if pn := o.byName[node]; pn != nil && pn.Spec.GatewayConfig == o.gcName {
		return pn
	}
	return nil
}

// observe reads the nodes the GatewayConfig wins, its revisions and their
// agent pod templates, the ProxyNodes, its agent DaemonSet and agent pods.
// It writes the revision of the current spec, when it is missing: the plan
// needs it to exist; a spec whose agent image is not allowed is refused
// first. Once after an operator upgrade, it also records on the revision an
// earlier release was rolling out the pod template its agents run
// (adoptLegacyTemplate).
func (r *GatewayConfigReconciler) observe(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) (*observation, error) {
	obs := &observation{gcName: gc.Name}
	// A spec whose agent image is not allowed gets no revision.
	if err := r.Agent.checkAgentImage(gc.Spec.Agent); err != nil {
		return nil, reconcile.TerminalError(err)
	}
	var err error
	if obs.won, obs.lost, err = r.selectNodes(ctx, gc); err != nil {
		return nil, err
	}
	if obs.desired, obs.revs, err = r.ensureRevision(ctx, gc); err != nil {
		return nil, err
	}
	var pns proxyv1alpha1.ProxyNodeList
	if err := r.List(ctx, &pns); err != nil {
		return nil, err
	}
	obs.proxyNodes = pns.Items
	obs.byName = make(map[string]*proxyv1alpha1.ProxyNode, len(pns.Items))
	for i := range pns.Items {
		obs.byName[pns.Items[i].Name] = &pns.Items[i]
	}
	if obs.ds, obs.pods, err = r.observeAgents(ctx, gc); err != nil {
		return nil, err
	}
	if err := r.adoptLegacyTemplate(ctx, gc, obs); err != nil {
		return nil, err
	}
	obs.templates = revisionTemplates(obs)
	return obs, nil
}

// selectNodes returns the nodes this GatewayConfig wins, sorted by name, and
// the nodes it selects but an older GatewayConfig won.
func (r *GatewayConfigReconciler) selectNodes(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) ([]*corev1.Node, []selection.Lost, error) {
	var gcs proxyv1alpha1.GatewayConfigList
	if err := r.List(ctx, &gcs); err != nil {
		return nil, nil, err
	}
	// Read-only: no copy of every Node on every reconcile.
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, err
	}
	configs := make([]selection.Config, 0, len(gcs.Items))
	for i := range gcs.Items {
		g := &gcs.Items[i]
		sel, err := selection.Selector(g.Spec.NodeSelector)
		if err != nil {
			if g.Name == gc.Name {
				return nil, nil, reconcile.TerminalError(err)
			}
			continue
		}
		configs = append(configs, selection.Config{Name: g.Name, Created: g.CreationTimestamp.Time, Selector: sel, Deleting: !g.DeletionTimestamp.IsZero()})
	}
	sn := make([]selection.Node, 0, len(nodes.Items))
	byName := make(map[string]*corev1.Node, len(nodes.Items))
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if !n.DeletionTimestamp.IsZero() {
			continue
		}
		sn = append(sn, selection.Node{Name: n.Name, Labels: n.Labels})
		byName[n.Name] = n
	}
	res := selection.Assign(configs, sn)[gc.Name]
	if res == nil {
		return nil, nil, nil
	}
	won := make([]*corev1.Node, 0, len(res.Won))
	for _, name := range res.Won {
		won = append(won, byName[name])
	}
	return won, res.Lost, nil
}

// ensureRevision makes sure the revision of the current spec exists, and
// returns its name and every revision of the GatewayConfig by name.
func (r *GatewayConfigReconciler) ensureRevision(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) (string, map[string]*appsv1.ControllerRevision, error) {
	want, err := RevisionFor(gc.Name, &gc.Spec, r.Agent)
	if err != nil {
		return "", nil, reconcile.TerminalError(err)
	}
	data, name := want.Data, want.Name
	var list appsv1.ControllerRevisionList
	if err := r.List(ctx, &list, client.InNamespace(r.Agent.Namespace),
		client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name)}); err != nil {
		return "", nil, err
	}
	revs := make(map[string]*appsv1.ControllerRevision, len(list.Items)+1)
	var maxRev int64
	for i := range list.Items {
		rev := &list.Items[i]
		if !metav1.IsControlledBy(rev, gc) {
			continue
		}
		revs[rev.Name] = rev
		if rev.Revision > maxRev {
			maxRev = rev.Revision
		}
	}
	if _, ok := revs[name]; ok {
		return name, revs, nil
	}
	rev := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: r.Agent.Namespace, Annotations: revisionAnnotation(ctx),
			Labels: map[string]string{
				proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name),
				proxyv1alpha1.RevisionHashLabel:          want.Hash,
				proxyv1alpha1.PodTemplateHashLabel:       want.PodTemplateHash,
			},
		},
		Data:     runtime.RawExtension{Raw: data},
		Revision: maxRev + 1,
	}
	if err := controllerutil.SetControllerReference(gc, rev, r.Scheme); err != nil {
		return "", nil, err
	}
	if err := r.Create(ctx, rev, FieldOwner); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return "", nil, err
		}
		// Created by an earlier reconcile that the cache has not seen yet.
		if err := r.Get(ctx, client.ObjectKeyFromObject(rev), rev); err != nil {
			return "", nil, err
		}
		if string(rev.Data.Raw) != string(data) && !jsonEqual(rev.Data.Raw, data) {
			return "", nil, reconcile.TerminalError(fmt.Errorf("ControllerRevision %s/%s exists with other data", rev.Namespace, rev.Name))
		}
	} else {
		revisionsCreated.WithLabelValues(gc.Name).Inc()
		r.Recorder.Eventf(gc, rev, corev1.EventTypeNormal, proxyv1alpha1.ReasonRevisionCreated, "CreateRevision", "Created config revision %s", name)
		logf.FromContext(ctx).Info("Created config revision", "revision", name)
	}
	revs[name] = rev
	return name, revs, nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return string(ja) == string(jb)
}

// finalize removes what the GatewayConfig created, then its finalizer. The
// agents remove their rules when their ProxyNode goes.
func (r *GatewayConfigReconciler) finalize(ctx context.Context, gc *proxyv1alpha1.GatewayConfig) error {
	if !controllerutil.ContainsFinalizer(gc, Finalizer) {
		return nil
	}
	log := logf.FromContext(ctx)
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: agentObjectName(gc.Name), Namespace: r.Agent.Namespace}}
	if err := r.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return err
	}
	var pns proxyv1alpha1.ProxyNodeList
	if err := r.List(ctx, &pns, client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name)}); err != nil {
		return err
	}
	deleted := 0
	for i := range pns.Items {
		pn := &pns.Items[i]
		if pn.Spec.GatewayConfig != gc.Name {
			continue
		}
		if err := r.Delete(ctx, pn, client.Preconditions{UID: &pn.UID, ResourceVersion: &pn.ResourceVersion}); client.IgnoreNotFound(err) != nil {
			return err
		}
		deleted++
		proxyNodeWrites.WithLabelValues("delete").Inc()
	}
	if err := r.DeleteAllOf(ctx, &appsv1.ControllerRevision{}, client.InNamespace(r.Agent.Namespace),
		client.MatchingLabels{proxyv1alpha1.RevisionGatewayConfigLabel: labelValue(gc.Name)}); err != nil {
		return err
	}
	for _, state := range []string{"desired", "updated", "ready", "failed"} {
		rolloutNodes.DeleteLabelValues(gc.Name, state)
	}
	r.Recorder.Eventf(gc, nil, corev1.EventTypeNormal, proxyv1alpha1.ReasonDeleting, "Delete", "Removed the agent DaemonSet and %d ProxyNodes", deleted)
	log.Info("Removed the agent DaemonSet and ProxyNodes", "proxyNodes", deleted)
	patch := client.MergeFrom(gc.DeepCopy())
	controllerutil.RemoveFinalizer(gc, Finalizer)
	return client.IgnoreNotFound(r.Patch(ctx, gc, patch, FieldOwner))
}

// SetupWithManager registers the reconciler and its watches.
func (r *GatewayConfigReconciler) SetupWithManager(mgr ctrl.Manager) error {
	// configs lists the GatewayConfigs whose instance label value is inst,
	// or every one when inst is empty.
	configs := func(ctx context.Context, inst string) []reconcile.Request {
		var gcs proxyv1alpha1.GatewayConfigList
		if err := mgr.GetClient().List(ctx, &gcs); err != nil {
			return nil
		}
		out := make([]reconcile.Request, 0, len(gcs.Items))
		for _, g := range gcs.Items {
			if inst == "" || labelValue(g.Name) == inst {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Name: g.Name}})
			}
		}
		return out
	}
	allConfigs := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
		return configs(ctx, "")
	})
	// An agent pod names its GatewayConfig in its instance label.
	byAgentPod := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		if inst := o.GetLabels()[labelInstance]; inst != "" {
			return configs(ctx, inst)
		}
		return nil
	})
	nodeChanged := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !labels.Equals(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
	configMembership := predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				e.ObjectOld.GetDeletionTimestamp().IsZero() != e.ObjectNew.GetDeletionTimestamp().IsZero()
		},
	}
	byProxyNode := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		pn, ok := o.(*proxyv1alpha1.ProxyNode)
		if !ok || pn.Spec.GatewayConfig == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: pn.Spec.GatewayConfig}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&proxyv1alpha1.GatewayConfig{}).
		Owns(&appsv1.DaemonSet{}).
		Owns(&appsv1.ControllerRevision{}).
		Watches(&proxyv1alpha1.GatewayConfig{}, allConfigs, builder.WithPredicates(configMembership)).
		Watches(&corev1.Node{}, allConfigs, builder.WithPredicates(nodeChanged)).
		Watches(&proxyv1alpha1.ProxyNode{}, byProxyNode).
		Watches(&corev1.Pod{}, byAgentPod).
		Named("gatewayconfig").
		Complete(r)
}
