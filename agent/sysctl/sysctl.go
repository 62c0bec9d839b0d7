// Package sysctl reads and writes the kernel's network sysctls under a root
// that a container can be given. The root is /proc/sys by default. A
// container that is not privileged sees /proc/sys read-only, so the agent
// pod mounts the host's /proc/sys/net read-write at /host/proc/sys/net and
// the agent runs with --sysctl-root=/host/proc/sys: the narrowest grant that
// lets it write the net.* sysctls its backends need, and nothing else.
//
// Values under net/ belong to the network namespace of the thread that
// opens them, whatever the mount, so tests in a network namespace and the
// agent in the host's both see their own.
package sysctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
)

// DefaultRoot is where the kernel's sysctls are.
const DefaultRoot = "/proc/sys"

var root atomic.Value

func init() { root.Store(DefaultRoot) }

// SetRoot changes the sysctl root, e.g. to the host's /proc/sys as mounted
// in the agent pod.
func SetRoot(r string) { root.Store(r) }

// Root returns the sysctl root.
func Root() string { return root.Load().(string) }

// path turns "net.ipv4.vs.conntrack" or "net/ipv4/vs/conntrack" into a path
// under the root.
func path(key string) string {
	return filepath.Join(Root(), strings.ReplaceAll(key, ".", "/"))
}

// PermissionError names the permission the agent lacks to write a sysctl.
type PermissionError struct {
	Key  string
	Err  error
	Need string
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("cannot write sysctl %s: %v: %s", e.Key, e.Err, e.Need)
}

func (e *PermissionError) Unwrap() error { return e.Err }

// Read returns a sysctl's value, trimmed.
func Read(key string) (string, error) {
	b, err := os.ReadFile(path(key))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Write sets a sysctl. A denied write is a *PermissionError that says what
// the agent needs.
func Write(key, value string) error {
	err := os.WriteFile(path(key), []byte(value), 0o644)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EROFS):
		return &PermissionError{Key: key, Err: err, Need: "/proc/sys is read-only in this container: mount the host's " +
			"/proc/sys/net read-write and pass --sysctl-root (the DaemonSet the operator builds does both)"}
	case errors.Is(err, os.ErrPermission):
		return &PermissionError{Key: key, Err: err, Need: "the agent needs CAP_NET_ADMIN in the node's network namespace " +
			"(and the kernel lets only the initial network namespace set some net.netfilter values)"}
	}
	return fmt.Errorf("write sysctl %s: %w", key, err)
}

// Ensure sets a sysctl unless it already holds value; it returns the value
// it found.
func Ensure(key, value string) (old string, changed bool, err error) {
	old, err = Read(key)
	if err != nil {
		return "", false, fmt.Errorf("read sysctl %s: %w", key, err)
	}
	if old == value {
		return old, false, nil
	}
	return old, true, Write(key, value)
}
