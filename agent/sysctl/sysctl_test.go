package sysctl

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// The tests point the root at a temporary tree: a FAKE /proc/sys.
func fakeRoot(t *testing.T) string {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "net/ipv4/vs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "net/ipv4/vs/conntrack"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	SetRoot(dir)
	t.Cleanup(func() { SetRoot(DefaultRoot) })
	return dir
}

func TestEnsureWritesOnlyADifferentValue(t *testing.T) {
	fakeRoot(t)
	old, changed, err := Ensure("net.ipv4.vs.conntrack", "1")
	if err != nil || !changed || old != "0" {
		t.Fatalf("first Ensure: old %q changed %t err %v", old, changed, err)
	}
	if _, changed, err := Ensure("net/ipv4/vs/conntrack", "1"); err != nil || changed {
		t.Fatalf("second Ensure: changed %t err %v", changed, err)
	}
}

func TestDeniedWriteNamesThePermission(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores file modes: use a read-only bind of the fake tree.
		dir := fakeRoot(t)
		ro := t.TempDir()
		if err := syscall.Mount(dir, ro, "", syscall.MS_BIND, ""); err != nil {
			t.Skipf("SKIPPING: cannot bind-mount: %v", err)
		}
		t.Cleanup(func() { _ = syscall.Unmount(ro, 0) })
		if err := syscall.Mount("", ro, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			t.Skipf("SKIPPING: cannot remount read-only: %v", err)
		}
		SetRoot(ro)
	} else {
		dir := fakeRoot(t)
		_ = os.Chmod(filepath.Join(dir, "net/ipv4/vs/conntrack"), 0o444)
	}
	err := Write("net.ipv4.vs.conntrack", "1")
	var pe *PermissionError
	if !errors.As(err, &pe) || pe.Key != "net.ipv4.vs.conntrack" || pe.Need == "" {
		t.Fatalf("error %v, want a PermissionError naming the key and what is needed", err)
	}
}
