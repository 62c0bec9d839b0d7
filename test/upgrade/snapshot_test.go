package upgrade

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
	"github.com/synterix/synterix-kube-proxy/test/shipped"
)

// A snapshot is the stored state of the objects an upgrade must keep: the
// GatewayConfigs and ProxyPolicies (owned by humans: nothing may change),
// the ProxyNodes (the operator moves spec.revision; nothing else of their
// spec may change) and the config revisions (immutable data). It is read
// as the API server serves it, untyped, so that nothing of this test's
// Go types hides a field.
type snapshot map[string]stored

// stored is one object: key fields as JSON values (float64 numbers).
type stored struct {
	kind, name  string
	uid         string
	generation  int64
	spec, data  any
	labels      map[string]string
	annotations map[string]string
	finalizers  []string
	owners      any
}

var (
	gvGroup = schema.GroupVersion{Group: proxyv1alpha1.GroupVersion.Group, Version: proxyv1alpha1.GroupVersion.Version}
	kinds   = []string{"GatewayConfig", "ProxyPolicy", "ProxyNode"}
)

// takeSnapshot reads every GatewayConfig, ProxyPolicy, ProxyNode and config
// revision.
func takeSnapshot(ctx context.Context, cl client.Client) (snapshot, error) {
	s := snapshot{}
	for _, kind := range kinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvGroup.WithKind(kind + "List"))
		if err := cl.List(ctx, list); err != nil {
			return nil, fmt.Errorf("list %s: %w", kind, err)
		}
		for _, o := range list.Items {
			st := stored{kind: kind, name: o.GetNamespace() + "/" + o.GetName(), uid: string(o.GetUID()), generation: o.GetGeneration(),
				spec: normalize(o.Object["spec"]), labels: o.GetLabels(), annotations: o.GetAnnotations(),
				finalizers: o.GetFinalizers(), owners: normalize(o.Object["metadata"].(map[string]any)["ownerReferences"])}
			s[kind+" "+st.name] = st
		}
	}
	var revs appsv1.ControllerRevisionList
	// The config revisions, not the DaemonSet controller's own history of
	// the agent DaemonSets (which carry the GatewayConfig label too).
	if err := cl.List(ctx, &revs, client.InNamespace(shipped.OperatorNamespace), client.HasLabels{proxyv1alpha1.RevisionHashLabel}); err != nil {
		return nil, err
	}
	for _, r := range revs.Items {
		var data any
		if err := json.Unmarshal(r.Data.Raw, &data); err != nil {
			return nil, fmt.Errorf("ControllerRevision %s: %w", r.Name, err)
		}
		st := stored{kind: "ControllerRevision", name: r.Name, uid: string(r.UID), generation: r.Revision, data: data,
			labels: r.Labels, annotations: r.Annotations}
		s["ControllerRevision "+r.Name] = st
	}
	return s, nil
}

// normalize turns a JSON value of any decoder into encoding/json's.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// approved returns a copy of the snapshot in which GatewayConfig name has
// spec.rollout.approvedRevision rev and one generation more: the change a
// human made by approving.
func (s snapshot) approved(name, rev string) snapshot {
	out := snapshot{}
	for k, v := range s {
		out[k] = v
	}
	key := "GatewayConfig /" + name
	st := out[key]
	spec := normalize(st.spec).(map[string]any)
	rollout, _ := spec["rollout"].(map[string]any)
	if rollout == nil {
		rollout = map[string]any{}
		spec["rollout"] = rollout
	}
	rollout["approvedRevision"] = rev
	st.spec, st.generation = spec, st.generation+1
	out[key] = st
	return out
}

// compare returns the problems (an object lost or rewritten) and the
// changes an upgrade may make (a ProxyNode moved to another revision, a
// revision added, a revision's labels or annotations), between before and
// after.
func compare(before, after snapshot) (problems, changes []string) {
	for _, k := range sortedKeys(before) {
		b := before[k]
		a, ok := after[k]
		switch {
		case !ok:
			problems = append(problems, k+": lost")
			continue
		case a.uid != b.uid:
			problems = append(problems, fmt.Sprintf("%s: deleted and created anew (UID %s, was %s)", k, a.uid, b.uid))
			continue
		}
		switch b.kind {
		case "GatewayConfig", "ProxyPolicy":
			if d := diffs(b, a, "spec", "generation", "labels", "annotations", "finalizers"); len(d) > 0 {
				problems = append(problems, fmt.Sprintf("%s: rewritten: %v", k, d))
			}
		case "ProxyNode":
			bs, as := b.spec.(map[string]any), a.spec.(map[string]any)
			if !reflect.DeepEqual(bs["gatewayConfig"], as["gatewayConfig"]) || !reflect.DeepEqual(b.owners, a.owners) {
				problems = append(problems, fmt.Sprintf("%s: gatewayConfig %v -> %v, owners %v -> %v", k, bs["gatewayConfig"], as["gatewayConfig"], b.owners, a.owners))
			}
			if bs["revision"] != as["revision"] {
				changes = append(changes, fmt.Sprintf("%s: revision %v -> %v", k, bs["revision"], as["revision"]))
			}
		case "ControllerRevision":
			if d := diffs(b, a, "data", "generation"); len(d) > 0 {
				problems = append(problems, fmt.Sprintf("%s: rewritten: %v", k, d))
			}
			if d := diffs(b, a, "labels", "annotations"); len(d) > 0 {
				changes = append(changes, fmt.Sprintf("%s: metadata: %v", k, d))
			}
		}
	}
	for _, k := range sortedKeys(after) {
		if _, ok := before[k]; !ok {
			changes = append(changes, k+": new")
		}
	}
	return problems, changes
}

// diffs names the fields of a and b that differ.
func diffs(b, a stored, fields ...string) []string {
	var out []string
	for _, f := range fields {
		var x, y any
		switch f {
		case "spec":
			x, y = b.spec, a.spec
		case "data":
			x, y = b.data, a.data
		case "generation":
			x, y = b.generation, a.generation
		case "labels":
			x, y = b.labels, a.labels
		case "annotations":
			x, y = b.annotations, a.annotations
		case "finalizers":
			x, y = b.finalizers, a.finalizers
		}
		if !reflect.DeepEqual(normalize(x), normalize(y)) {
			out = append(out, fmt.Sprintf("%s %s -> %s", f, short(x), short(y)))
		}
	}
	return out
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

func sortedKeys(s snapshot) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readBack decodes every object of the snapshot with this release's (N's)
// Go types and encodes it again: the spec of a GatewayConfig, ProxyPolicy
// or ProxyNode, and what a config revision holds (RevisionData, through
// the decoder the operator and the agents use). Anything the types drop,
// rename or default shows as a difference: objects stored by N-1 must read
// back unchanged under N.
func readBack(s snapshot) []string {
	var problems []string
	for _, k := range sortedKeys(s) {
		st := s[k]
		var got any
		var err error
		switch st.kind {
		case "GatewayConfig":
			got, err = roundTrip(st.spec, &proxyv1alpha1.GatewayConfigSpec{})
		case "ProxyPolicy":
			got, err = roundTrip(st.spec, &proxyv1alpha1.ProxyPolicySpec{})
		case "ProxyNode":
			got, err = roundTrip(st.spec, &proxyv1alpha1.ProxyNodeSpec{})
		case "ControllerRevision":
			var raw []byte
			if raw, err = json.Marshal(st.data); err == nil {
				var d *proxyv1alpha1.RevisionData
				if d, err = proxyv1alpha1.DecodeRevisionData(raw); err == nil {
					got = normalize(d)
				}
			}
		}
		want := st.spec
		if st.kind == "ControllerRevision" {
			want = st.data
		}
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: N cannot read it: %v", k, err))
		case !reflect.DeepEqual(got, normalize(want)):
			problems = append(problems, fmt.Sprintf("%s: N reads %s, stored %s", k, short(got), short(want)))
		}
	}
	return problems
}

// roundTrip decodes v into typed and encodes it again.
func roundTrip(v any, typed any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, typed); err != nil {
		return nil, err
	}
	return normalize(typed), nil
}
