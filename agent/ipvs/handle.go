package ipvs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	libipvs "github.com/moby/ipvs"
)

// Handle is the narrow part of the IPVS netlink API the backend uses. The
// real implementation is netlinkHandle (moby/ipvs); unit tests use a fake.
type Handle interface {
	GetServices() ([]*libipvs.Service, error)
	NewService(*libipvs.Service) error
	UpdateService(*libipvs.Service) error
	DelService(*libipvs.Service) error
	GetDestinations(*libipvs.Service) ([]*libipvs.Destination, error)
	NewDestination(*libipvs.Service, *libipvs.Destination) error
	UpdateDestination(*libipvs.Service, *libipvs.Destination) error
	DelDestination(*libipvs.Service, *libipvs.Destination) error
	GetConfig() (*libipvs.Config, error)
	SetConfig(*libipvs.Config) error
	Close()
}

// ErrCallTimeout is returned when an IPVS netlink call did not answer in
// time. The socket is closed and the next call opens a new one.
var ErrCallTimeout = errors.New("ipvs: netlink call timed out")

// netlinkHandle serializes calls on one moby/ipvs handle and bounds each
// call with a timeout. moby/ipvs retries EAGAIN on its receive timeout
// forever, so a lost reply would hang the caller; closing the socket makes
// the stuck call return, and the handle is reopened on the next call.
type netlinkHandle struct {
	mu      sync.Mutex
	nsPath  string
	timeout time.Duration
	h       *libipvs.Handle
}

// NewNetlinkHandle opens an IPVS handle in the network namespace at nsPath
// ("" for the caller's). Every call is bounded by timeout.
func NewNetlinkHandle(nsPath string, timeout time.Duration) (Handle, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	n := &netlinkHandle{nsPath: nsPath, timeout: timeout}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.handle(); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *netlinkHandle) handle() (*libipvs.Handle, error) {
	if n.h != nil {
		return n.h, nil
	}
	h, err := libipvs.New(n.nsPath)
	if err != nil {
		return nil, fmt.Errorf("open ipvs netlink handle: %w", err)
	}
	n.h = h
	return h, nil
}

// call runs fn on the handle with the lock held and the timeout applied.
func (n *netlinkHandle) call(op string, fn func(h *libipvs.Handle) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, err := n.handle()
	if err != nil {
		return err
	}
	return withTimeout(n.timeout, func() error { return fn(h) }, func() {
		h.Close()
		n.h = nil
	}, op)
}

// withTimeout runs fn in a goroutine. If it does not return within d,
// abort is called (it must make fn return) and ErrCallTimeout is returned.
func withTimeout(d time.Duration, fn func() error, abort func(), op string) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		abort()
		return fmt.Errorf("%s: %w after %s", op, ErrCallTimeout, d)
	}
}

func (n *netlinkHandle) GetServices() (out []*libipvs.Service, err error) {
	err = n.call("GetServices", func(h *libipvs.Handle) (e error) { out, e = h.GetServices(); return })
	return
}

func (n *netlinkHandle) NewService(s *libipvs.Service) error {
	return n.call("NewService", func(h *libipvs.Handle) error { return h.NewService(s) })
}

func (n *netlinkHandle) UpdateService(s *libipvs.Service) error {
	return n.call("UpdateService", func(h *libipvs.Handle) error { return h.UpdateService(s) })
}

func (n *netlinkHandle) DelService(s *libipvs.Service) error {
	return n.call("DelService", func(h *libipvs.Handle) error { return h.DelService(s) })
}

func (n *netlinkHandle) GetDestinations(s *libipvs.Service) (out []*libipvs.Destination, err error) {
	err = n.call("GetDestinations", func(h *libipvs.Handle) (e error) { out, e = h.GetDestinations(s); return })
	return
}

func (n *netlinkHandle) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	return n.call("NewDestination", func(h *libipvs.Handle) error { return h.NewDestination(s, d) })
}

func (n *netlinkHandle) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	return n.call("UpdateDestination", func(h *libipvs.Handle) error { return h.UpdateDestination(s, d) })
}

func (n *netlinkHandle) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	return n.call("DelDestination", func(h *libipvs.Handle) error { return h.DelDestination(s, d) })
}

func (n *netlinkHandle) GetConfig() (out *libipvs.Config, err error) {
	err = n.call("GetConfig", func(h *libipvs.Handle) (e error) { out, e = h.GetConfig(); return })
	return
}

func (n *netlinkHandle) SetConfig(c *libipvs.Config) error {
	return n.call("SetConfig", func(h *libipvs.Handle) error { return h.SetConfig(c) })
}

func (n *netlinkHandle) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
}
