package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestHostPathOf maps container paths to host paths through hostPath
// mounts the way the agent pod is built: the sysctl root above the
// mounted /proc/sys/net, a path inside a mount, and one no mount explains.
func TestHostPathOf(t *testing.T) {
	spec := corev1.PodSpec{Volumes: []corev1.Volume{
		{Name: "proc-sys-net", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/proc/sys/net"}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "lock", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/run/xtables.lock"}}},
	}}
	ctr := corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "lock", MountPath: "/run/xtables.lock"},
		{Name: "proc-sys-net", MountPath: "/host/proc/sys/net"},
	}}
	for path, want := range map[string]string{
		"/host/proc/sys":               "/proc/sys",
		"/host/proc/sys/net/ipv4":      "/proc/sys/net/ipv4",
		"/run/xtables.lock":            "/run/xtables.lock",
		"/tmp/x":                       "/tmp/x", // an emptyDir: not the host's
		"/host/proc/sysfoo":            "/host/proc/sysfoo",
		"/somewhere/else/entirely/abc": "/somewhere/else/entirely/abc",
	} {
		if got := hostPathOf(spec, ctr, path); got != want {
			t.Errorf("hostPathOf(%q) = %q, want %q", path, got, want)
		}
	}
}
