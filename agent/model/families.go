package model

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// other returns the other IP family.
func (f Family) other() Family {
	if f == IPv6 {
		return IPv4
	}
	return IPv6
}

// familyOfAddr returns the family of an address.
func familyOfAddr(s string) (Family, bool) {
	a, ok := parseIP(s)
	switch {
	case !ok:
		return "", false
	case a.Is4():
		return IPv4, true
	}
	return IPv6, true
}

// sliceFamily returns the IP family of an EndpointSlice, or false for FQDN
// slices and unknown types.
func sliceFamily(es *discoveryv1.EndpointSlice) (Family, bool) {
	switch es.AddressType {
	case discoveryv1.AddressTypeIPv4:
		return IPv4, true
	case discoveryv1.AddressTypeIPv6:
		return IPv6, true
	}
	return "", false
}

// familyProblems reports what of a Service's input does not fit the node's
// families, without changing what is built:
//   - an EndpointSlice of a family the Service has no ClusterIP of: its
//     endpoints serve nothing;
//   - on a node that programs one family only, a Service whose ClusterIPs
//     are all of the other family (not served here), or one that asks
//     RequireDualStack (only this family's ClusterIP is served here).
//
// Each family reports the slices of its own family, and a single-stack
// node's family those of the other too, so that a dual-stack node reports
// each problem once.
func (b *builder) familyProblems(svc *corev1.Service, clusterIPs []string) {
	has := map[Family][]string{}
	for _, s := range clusterIPs {
		if f, ok := familyOfAddr(s); ok {
			has[f] = append(has[f], s)
		}
	}
	if len(has) == 0 {
		return // not allocated yet, or invalid (reported elsewhere)
	}
	ref := ServiceRef{Namespace: svc.Namespace, Name: svc.Name}
	for _, es := range b.src.EndpointSlices(ref) {
		f, ok := sliceFamily(es)
		if !ok || len(has[f]) > 0 || es.Labels[discoveryv1.LabelServiceName] != ref.Name ||
			(f != b.family && !b.cfg.SingleStack) {
			continue
		}
		b.problem(sliceObject(es), "holds %s endpoints, but Service %s has no %s ClusterIP (clusterIPs %s): its endpoints are not used",
			f, ref, f, strings.Join(clusterIPs, ", "))
	}
	if !b.cfg.SingleStack {
		return
	}
	other := b.family.other()
	switch {
	case len(has[other]) == 0:
	case len(has[b.family]) == 0:
		b.problem(svcObject(svc), "has only %s ClusterIPs (%s), and this node has no %s address: the Service is not served on this node",
			other, strings.Join(has[other], ", "), other)
	case svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy == corev1.IPFamilyPolicyRequireDualStack:
		b.problem(svcObject(svc), "asks ipFamilyPolicy RequireDualStack, but this node has no %s address: only its %s ClusterIP %s is served on this node, not %s",
			other, b.family, strings.Join(has[b.family], ", "), strings.Join(has[other], ", "))
	}
}
