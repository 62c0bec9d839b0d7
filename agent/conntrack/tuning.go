package conntrack

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/synterix/synterix-kube-proxy/agent/sysctl"
)

// Tuning is the size and the timeouts of the conntrack table. A zero field
// keeps the kernel's value.
type Tuning struct {
	// MaxPerCore × CPUs, but at least Min, is nf_conntrack_max; only when
	// MaxPerCore > 0.
	MaxPerCore, Min int64
	// Timeouts; the kernel counts whole seconds, a fraction is rounded up.
	TCPEstablishedTimeout, TCPCloseWaitTimeout time.Duration
	UDPTimeout, UDPStreamTimeout               time.Duration
}

// Sysctl keys, relative to /proc/sys.
const (
	keyMax             = "net/netfilter/nf_conntrack_max"
	keyTCPEstablished  = "net/netfilter/nf_conntrack_tcp_timeout_established"
	keyTCPCloseWait    = "net/netfilter/nf_conntrack_tcp_timeout_close_wait"
	keyUDPTimeout      = "net/netfilter/nf_conntrack_udp_timeout"
	keyUDPStreamTimout = "net/netfilter/nf_conntrack_udp_timeout_stream"
)

// ErrReadOnly is wrapped by Tune's error when a value cannot be written in
// this network namespace: the kernel lets only the initial network
// namespace set nf_conntrack_max.
var ErrReadOnly = errors.New("read-only in this network namespace")

// Max returns the nf_conntrack_max that t asks for on a node with cpus
// CPUs, or 0 when t keeps the kernel's limit.
func (t Tuning) Max(cpus int) int64 {
	if t.MaxPerCore <= 0 {
		return 0
	}
	return max(t.MaxPerCore*int64(cpus), t.Min)
}

// seconds rounds d up to whole seconds.
func seconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// Tune writes the values of t that differ from the kernel's into the sysctls
// of the calling thread's network namespace. It returns the "key=value"
// writes it made. Every value is tried; the error joins the failures, and a
// value the namespace cannot change (nf_conntrack_max outside the initial
// namespace) fails with ErrReadOnly and is named as not applied.
func Tune(t Tuning) (applied []string, err error) {
	type kv struct {
		key string
		val int64
	}
	want := []kv{
		{keyMax, t.Max(runtime.NumCPU())},
		{keyTCPEstablished, seconds(t.TCPEstablishedTimeout)},
		{keyTCPCloseWait, seconds(t.TCPCloseWaitTimeout)},
		{keyUDPTimeout, seconds(t.UDPTimeout)},
		{keyUDPStreamTimout, seconds(t.UDPStreamTimeout)},
	}
	var errs []error
	for _, w := range want {
		if w.val <= 0 {
			continue
		}
		done, err := setIfDiffers(w.key, w.val)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if done {
			applied = append(applied, fmt.Sprintf("%s=%d", w.key, w.val))
		}
	}
	return applied, errors.Join(errs...)
}

// setIfDiffers writes val to key unless it already holds it.
func setIfDiffers(key string, val int64) (bool, error) {
	raw, err := sysctl.Read(key)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("%s not applied: no such sysctl (is the nf_conntrack module loaded?)", key)
		}
		return false, fmt.Errorf("%s not applied: %w", key, err)
	}
	cur, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return false, fmt.Errorf("%s not applied: cannot parse the current value %q: %w", key, raw, err)
	}
	if cur == val {
		return false, nil
	}
	if err := sysctl.Write(key, strconv.FormatInt(val, 10)); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return false, fmt.Errorf("%s=%d not applied (kernel keeps %d): %w", key, val, cur, ErrReadOnly)
		}
		return false, fmt.Errorf("%s=%d not applied: %w", key, val, err)
	}
	return true, nil
}
