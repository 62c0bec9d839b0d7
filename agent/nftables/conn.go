package nftables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// conn is a netlink socket to nf_tables in the network namespace of the
// thread that opened it. It sends a whole transaction in one sendmsg and
// asks for one acknowledgement per transaction, not per message (the
// per-message acknowledgements and echoes of github.com/google/nftables'
// Conn cost more than the kernel's own work at 100k rules; see
// docs/performance.md).
type conn struct {
	nl     *netlink.Conn
	raw    syscall.RawConn
	buf    []byte
	sndbuf int
	netns  uint64 // inode of the network namespace it was opened in
	// deadline bounds every exchange with the kernel.
	deadline time.Time
}

// dial opens a socket in the calling thread's network namespace.
func dial(ctx context.Context) (*conn, error) {
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open nf_tables netlink socket: %w", err)
	}
	raw, err := nl.SyscallConn()
	if err != nil {
		nl.Close()
		return nil, err
	}
	c := &conn{nl: nl, raw: raw, buf: make([]byte, 256<<10), deadline: time.Now().Add(5 * time.Minute)}
	if dl, ok := ctx.Deadline(); ok {
		c.deadline = dl
	}
	// Room for the replies to a dump or a failed transaction; root may
	// force buffers beyond the sysctl limits (send grows the send
	// buffer to fit each transaction), others get ENOBUFS/EMSGSIZE.
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	})
	return c, nil
}

func (c *conn) close() { _ = c.nl.Close() }

// socket returns the backend's socket, opening it (again) when there is
// none or when the calling thread is in another network namespace than
// the one it was opened in.
func (b *Backend) socket(ctx context.Context) (*conn, error) {
	ns, err := threadNetns()
	if err != nil {
		return nil, err
	}
	if b.sock != nil && b.sock.netns != ns {
		b.dropSocket(nil)
	}
	if b.sock == nil {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		c.netns, b.sock = ns, c
	}
	b.sock.deadline = time.Now().Add(5 * time.Minute)
	if dl, ok := ctx.Deadline(); ok {
		b.sock.deadline = dl
	}
	return b.sock, nil
}

// dropSocket closes the backend's socket: at Cleanup, or after an error
// that may have left unread replies on it (a kernel error does not).
func (b *Backend) dropSocket(err error) {
	var ke *KernelError
	if b.sock == nil || (err != nil && errors.As(err, &ke)) {
		return
	}
	b.sock.close()
	b.sock = nil
}

// threadNetns identifies the calling thread's network namespace.
func threadNetns() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("network namespace of this thread: %w", err)
	}
	return st.Ino, nil
}

// msgType is the netlink type of an nf_tables message.
func msgType(m int) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | m)
}

// nfgen is the nfgenmsg header every nf_tables message starts with.
func nfgen(fam byte, res uint16) []byte {
	return []byte{fam, unix.NFNETLINK_V0, byte(res >> 8), byte(res)}
}

// KernelError is an error the kernel reported for one message of a
// transaction or for a request.
type KernelError struct {
	What  string
	Errno syscall.Errno
}

func (e *KernelError) Error() string { return fmt.Sprintf("%s: %v", e.What, e.Errno) }
func (e *KernelError) Unwrap() error { return e.Errno }

// commit sends a transaction and waits for its outcome. The kernel applies
// all of it or nothing; every error it reports is returned, named by the
// message that caused it.
func (c *conn) commit(t *txn) error {
	if len(t.what) == 0 {
		return nil
	}
	// Ask for one acknowledgement: of the last message. The kernel
	// answers with an error per failed message, then that ack; or with
	// one error on the batch header (sequence 0) when the commit fails.
	flags := binary.NativeEndian.Uint16(t.buf[t.last+6:])
	binary.NativeEndian.PutUint16(t.buf[t.last+6:], flags|unix.NLM_F_ACK)
	last := uint32(len(t.what))
	bufs := [][]byte{batchMsg(unix.NFNL_MSG_BATCH_BEGIN, 0), t.buf, batchMsg(unix.NFNL_MSG_BATCH_END, last+1)}
	if err := c.send(bufs, len(t.buf)); err != nil {
		return fmt.Errorf("send nf_tables transaction of %d messages: %w", len(t.what), err)
	}
	var errs []error
	for {
		reply, err := c.recv()
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("nf_tables transaction: %w", err))...)
		}
		for _, m := range reply {
			if m.Header.Type != netlink.Error {
				continue
			}
			seq := m.Header.Sequence
			if seq > last {
				continue // not ours: an older exchange's
			}
			if errno := errnoOf(m.Data); errno != 0 {
				errs = append(errs, &KernelError{What: t.describe(seq), Errno: errno})
			}
			if seq == last || seq == 0 {
				return errors.Join(errs...)
			}
		}
	}
}

// batchMsg is a batch begin or end message.
func batchMsg(typ int, seq uint32) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint32(b[0:], unix.NLMSG_HDRLEN+4)
	binary.NativeEndian.PutUint16(b[4:], uint16(typ))
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(b[8:], seq)
	return append(b, nfgen(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)...)
}

// send writes buffers as one datagram, growing the send buffer to fit.
func (c *conn) send(bufs [][]byte, size int) error {
	if need := size + 64<<10; need > c.sndbuf {
		_ = c.raw.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, need) == nil {
				c.sndbuf = need
			}
		})
	}
	if err := c.nl.SetWriteDeadline(c.deadline); err != nil {
		return err
	}
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		_, werr = unix.SendmsgBuffers(int(fd), bufs, nil, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}, 0)
		return werr != unix.EAGAIN && werr != unix.EINTR
	})
	if err != nil {
		return err
	}
	return werr
}

// dump sends a dump request and hands every reply message to fn. An
// NLMSG_ERROR ends it with that error (ENOENT when the table or set does
// not exist).
func (c *conn) dump(what string, typ int, fam byte, attrs []netlink.Attribute, fn func(data []byte) error) error {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	req := netlink.Message{Header: netlink.Header{Type: msgType(typ), Flags: netlink.Request | netlink.Dump | netlink.Acknowledge},
		Data: append(nfgen(fam, 0), data...)}
	sent, err := c.nl.Send(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for {
		reply, err := c.recv()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		for _, m := range reply {
			if m.Header.Sequence != sent.Header.Sequence {
				continue
			}
			switch m.Header.Type {
			case netlink.Done:
				return nil
			case netlink.Error:
				if errno := errnoOf(m.Data); errno != 0 {
					return &KernelError{What: what, Errno: errno}
				}
				return nil
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("%s: short message", what)
			}
			if err := fn(m.Data[4:]); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
	}
}

// errnoOf reads the (negative) error code of an NLMSG_ERROR payload.
func errnoOf(data []byte) syscall.Errno {
	if len(data) < 4 {
		return syscall.EPROTO
	}
	code := int32(binary.NativeEndian.Uint32(data[:4]))
	if code < 0 {
		code = -code
	}
	return syscall.Errno(code)
}

// recv reads one datagram and splits it into messages, without turning
// NLMSG_ERROR into Go errors, so that commit can attribute each error.
func (c *conn) recv() ([]netlink.Message, error) {
	if err := c.nl.SetReadDeadline(c.deadline); err != nil {
		return nil, err
	}
	var n int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), c.buf, unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	})
	if err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	return splitMessages(c.buf[:n])
}

// splitMessages parses the netlink messages of one datagram.
func splitMessages(b []byte) ([]netlink.Message, error) {
	var out []netlink.Message
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return out, fmt.Errorf("malformed netlink message: length %d of %d bytes", l, len(b))
		}
		out = append(out, netlink.Message{Header: netlink.Header{
			Length:   uint32(l),
			Type:     netlink.HeaderType(binary.NativeEndian.Uint16(b[4:])),
			Flags:    netlink.HeaderFlags(binary.NativeEndian.Uint16(b[6:])),
			Sequence: binary.NativeEndian.Uint32(b[8:]),
			PID:      binary.NativeEndian.Uint32(b[12:]),
		}, Data: b[unix.NLMSG_HDRLEN:l]})
		if a := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1); a < len(b) {
			b = b[a:]
		} else {
			break
		}
	}
	return out, nil
}
