package nftables

import (
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/synterix/synterix-kube-proxy/agent/model"
)

// Hook priorities: the nat chains sit where iptables' nat table does; the
// filter chains just before the filter table, so that our REJECT answers
// before another table's DROP.
const (
	prioDstNAT = -100
	prioSrcNAT = 100
	prioFilter = -1
)

// sets are the definitions of the table's sets and maps.
func (r *renderer) sets() []*setDef {
	a := r.f.addrLen
	frontend := func(name string) *setDef {
		return &setDef{name: name, flags: unix.NFT_SET_MAP | setConcat,
			keyType: concatType(r.f.addrType, typeInetProto, typeInetService), fields: []uint32{a, 1, 2},
			dataType: unix.NFT_DATA_VERDICT}
	}
	return []*setDef{
		frontend(setServices),
		frontend(setNoEndpoint),
		{name: setEndpoints, flags: unix.NFT_SET_MAP | setConcat,
			keyType: concatType(r.f.addrType, typeInetProto, typeInetService, typeMark), fields: []uint32{a, 1, 2, 4},
			dataType: concatType(r.f.addrType, typeInetService), dataLen: a + 4},
		{name: setDigest, flags: setConcat, keyType: concatType(typeMark, typeMark, typeMark, typeMark), fields: []uint32{4, 4, 4, 4}},
		{name: setHairpin, flags: setConcat, keyType: concatType(r.f.addrType, r.f.addrType), fields: []uint32{a, a}},
		{name: setAffinity, flags: unix.NFT_SET_TIMEOUT | unix.NFT_SET_EVAL | setConcat, size: affinitySize,
			keyType: concatType(r.f.addrType, r.f.addrType, typeInetService, r.f.addrType, typeInetService),
			fields:  []uint32{a, a, 2, a, 2}},
	}
}

// shared renders the chains every service port shares, in creation order
// (chains before those that refer to them). Their rules carry a digest
// in their user data, which a full sync compares.
func (r *renderer) shared(localhost bool) []*chain {
	fam := r.f.proto
	mk := func(e ...expr.Any) rule { return encode(fam, true, e...) }
	var offCluster []rule
	for _, m := range r.localMatches() {
		offCluster = append(offCluster, mk(append(m, verdict(expr.VerdictReturn))...))
	}
	offCluster = append(offCluster, mk(jump(chainMarkMasq)))
	var filter []rule
	if localhost && r.f.routeLocalnet {
		// route_localnet lets anyone reach 127/8 through the node's
		// interfaces; drop what is not ours (not DNATed) from outside.
		filter = append(filter, mk(cat(r.f.prefix(r.f.daddr, r.f.loopback, false), r.f.prefix(r.f.saddr, r.f.loopback, true),
			ctBits(expr.CtKeySTATE, ctStateEstablished|ctStateRelated, true), ctBits(expr.CtKeySTATUS, ctStatusDNAT, true),
			[]expr.Any{verdict(expr.VerdictDrop)})...))
	}
	filter = append(filter, mk(r.f.dispatch(setNoEndpoint)...))
	hairpin := []expr.Any{
		&expr.Payload{DestRegister: reg32_0, Base: expr.PayloadBaseNetworkHeader, Offset: r.f.saddr, Len: r.f.addrLen},
		&expr.Payload{DestRegister: reg32_0 + r.f.addrLen/4, Base: expr.PayloadBaseNetworkHeader, Offset: r.f.daddr, Len: r.f.addrLen},
		&expr.Lookup{SourceRegister: reg32_0, SetName: setHairpin},
		jump(chainMarkMasq),
	}
	newOnly := mk(append(ctBits(expr.CtKeySTATE, ctStateNew, false), jump(chainFilter))...)
	toServices := mk(jump(chainServices))
	base := func(name, typ string, hook uint32, prio int32, rules ...rule) *chain {
		return &chain{name: name, base: &baseChain{typ: typ, hook: hook, prio: prio}, rules: rules}
	}
	return []*chain{
		{name: chainReject, rules: r.rejectRules(mk)},
		{name: chainMarkMasq, rules: []rule{mk(markSet(^r.mark, r.mark)...)}},
		{name: chainOffCluster, rules: offCluster},
		{name: chainServices, rules: []rule{mk(r.f.dispatch(setServices)...)}},
		{name: chainFilter, rules: filter},
		{name: chainCanary, rules: []rule{mk(verdict(expr.VerdictReturn))}},
		base("nat-prerouting", "nat", unix.NF_INET_PRE_ROUTING, prioDstNAT, toServices),
		base("nat-output", "nat", unix.NF_INET_LOCAL_OUT, prioDstNAT, toServices),
		base("nat-postrouting", "nat", unix.NF_INET_POST_ROUTING, prioSrcNAT,
			mk(hairpin...),
			mk(append(markClear(r.mark), verdict(expr.VerdictReturn))...),
			mk(markSet(^r.mark, 0)...),
			mk(&expr.Masq{FullyRandom: true})),
		base("filter-input", "filter", unix.NF_INET_LOCAL_IN, prioFilter, newOnly),
		base("filter-forward", "filter", unix.NF_INET_FORWARD, prioFilter, newOnly),
		base("filter-output", "filter", unix.NF_INET_LOCAL_OUT, prioFilter, newOnly),
	}
}

// hairpinKey is a local endpoint reaching itself.
func hairpinKey(a []byte) string { return string(a) + string(a) }

// rejectRules refuse a connection to a frontend without endpoints: ICMP
// port unreachable, as kube-proxy; over IPv6 a TCP reset for TCP first,
// because a Linux TCP client over IPv6 does not give up its SYN on an
// ICMPv6 port unreachable: it retries and sees a timeout instead of a
// refusal. The iptables backend does the same.
func (r *renderer) rejectRules(mk func(e ...expr.Any) rule) []rule {
	icmp := mk(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: r.f.rejectCode})
	if r.f.model != model.IPv6 {
		return []rule{icmp}
	}
	tcp := mk(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
	return []rule{tcp, icmp}
}
