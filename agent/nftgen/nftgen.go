// Package nftgen reads the nf_tables ruleset generation of a network
// namespace: a counter the kernel bumps with every committed change to any
// nf_tables table of that namespace, whoever made it (iptables-nft, nft,
// another agent) and whatever the family. Two equal readings mean that no
// nf_tables rule, chain, set or table of the namespace changed between
// them, which lets a backend skip reading back a ruleset it has already
// verified.
//
// It speaks netlink only (NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN) and opens
// its socket in the network namespace of the calling OS thread, like the
// backends that use it.
package nftgen

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// timeout bounds one reading when the context has no deadline: the kernel
// answers at once, so this only guards against a hang.
const timeout = 10 * time.Second

// Read returns the nf_tables ruleset generation of the calling thread's
// network namespace. It opens a netlink socket, asks once and closes it.
func Read(ctx context.Context) (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return 0, fmt.Errorf("open nf_tables netlink socket: %w", err)
	}
	defer c.Close()
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(timeout)
	}
	if err := c.SetDeadline(dl); err != nil {
		return 0, err
	}
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		// nfgenmsg: family unspecified, version 0, resource id 0.
		Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := c.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("read nf_tables generation: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) {
			continue
		}
		return parse(m.Data)
	}
	return 0, fmt.Errorf("read nf_tables generation: no NEWGEN reply among %d messages", len(msgs))
}

// parse reads NFTA_GEN_ID (big-endian u32) from a NEWGEN message's payload.
func parse(data []byte) (uint32, error) {
	if len(data) < 4 {
		return 0, fmt.Errorf("nf_tables generation reply: short message (%d bytes)", len(data))
	}
	attrs, err := netlink.UnmarshalAttributes(data[4:])
	if err != nil {
		return 0, fmt.Errorf("nf_tables generation reply: %w", err)
	}
	for _, a := range attrs {
		if a.Type == unix.NFTA_GEN_ID && len(a.Data) == 4 {
			return binary.BigEndian.Uint32(a.Data), nil
		}
	}
	return 0, fmt.Errorf("nf_tables generation reply: no NFTA_GEN_ID attribute")
}
