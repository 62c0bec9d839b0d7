package nftables

import (
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// balance renders the rules that spread new connections over eps.
//
// Endpoints are rules in the service port's chain, not chains of their
// own, and the pick is one "numgen mod k 0" per rule with k = endpoints
// left (probabilities 1/n, 1/(n-1), ... : uniform), as the iptables
// backend's statistic match: no set per Service, none per endpoint, so a
// rule add never scans sets (kubernetes#139513).
//
// ClientIP affinity is one shared dynamic set keyed by client, the
// service port's anchor frontend and the endpoint: a rule per endpoint
// looks the client up and refreshes its binding, and the pick rules record
// it; a removed endpoint's bindings simply stop matching and time out.
func (r *renderer) balance(s *model.Service, eps []model.Endpoint) []rule {
	var ts []target
	for _, e := range eps {
		a, err := r.f.addr(e.Addr)
		if err != nil {
			klog.ErrorS(err, "Skipping an endpoint of another family", "service", s.Key, "endpoint", e.String())
			continue
		}
		ts = append(ts, target{a, uint16(e.Port)})
	}
	fam, proto := r.f.proto, l4proto(s.Protocol)
	var aff func(t target, op uint32) []expr.Any
	if s.Affinity.ClientIP {
		aff = r.affinity(s)
	}
	rules := make([]rule, 0, 2*len(ts)+1)
	if aff != nil {
		for _, t := range ts {
			rules = append(rules, encode(fam, false, cat(proto, aff(t, lookupOp), aff(t, unix.NFT_DYNSET_OP_UPDATE), r.f.dnat(t.addr, t.port))...))
		}
	}
	for i, t := range ts {
		var pick []expr.Any
		switch left := uint32(len(ts) - i); {
		case left == 1:
		case s.Algorithm == model.AlgorithmRoundRobin:
			// Each rule counts the new connections reaching it and
			// takes the first of every "left": a strict rotation.
			pick = pickOne(left, true)
		case s.Algorithm == model.AlgorithmSourceHashing:
			pick = r.f.hashOne(left, hashSeed+uint32(i))
		default:
			pick = pickOne(left, false)
		}
		var record []expr.Any
		if aff != nil {
			record = aff(t, unix.NFT_DYNSET_OP_UPDATE)
		}
		rules = append(rules, encode(fam, false, cat(proto, pick, record, r.f.dnat(t.addr, t.port))...))
	}
	if aff != nil && len(ts) > 0 {
		// Reached only when the affinity set is full and the last pick
		// could not record its binding: balance without one.
		t := ts[len(ts)-1]
		rules = append(rules, encode(fam, false, cat(proto, r.f.dnat(t.addr, t.port))...))
	}
	return rules
}

// target is an endpoint in the family's bytes.
type target struct {
	addr []byte
	port uint16
}

// hashSeed seeds the per-rule source hashes of SourceHashing; rules use
// different seeds so that their picks are independent.
const hashSeed = 0x53594e58

// lookupOp asks affinity for the lookup instead of a dynset operation.
const lookupOp = ^uint32(0)

// affinity returns a builder of the expressions that look a client up in
// the affinity set for an endpoint (op lookupOp) or record the binding
// (NFT_DYNSET_OP_UPDATE: add, or refresh its timeout).
//
// The key is "ip saddr . anchor address . anchor port . endpoint address
// . endpoint port" (nft names concatenations of at most five fields);
// everything after the client is a constant of the rule, loaded by
// immediates. The TCP and UDP ports of one number share bindings when
// they share endpoints, which keeps a client on one pod.
func (r *renderer) affinity(s *model.Service) func(t target, op uint32) []expr.Any {
	an := anchor(s)
	a, err := r.f.addr(an.Addr)
	if err != nil {
		a = make([]byte, r.f.addrLen)
	}
	timeout := affinityTimeout(s)
	return func(t target, op uint32) []expr.Any {
		// One immediate per field: nft prints (and does not crash on)
		// what it would have written itself.
		// A short value zeroes the rest of its 4-byte register.
		fields := [][]byte{a, be16(uint16(an.Port)), t.addr, be16(t.port)}
		out := []expr.Any{&expr.Payload{DestRegister: reg32_0, Base: expr.PayloadBaseNetworkHeader, Offset: r.f.saddr, Len: r.f.addrLen}}
		reg := uint32(reg32_0) + r.f.addrLen/4
		for _, v := range fields {
			out = append(out, &expr.Immediate{Register: reg, Data: v})
			reg += pad4(uint32(len(v))) / 4
		}
		if op == lookupOp {
			return append(out, &expr.Lookup{SourceRegister: reg32_0, SetName: setAffinity})
		}
		return append(out, &expr.Dynset{SrcRegKey: reg32_0, SetName: setAffinity, Operation: op, Timeout: timeout})
	}
}
