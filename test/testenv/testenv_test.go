package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestRequiredVersion(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const gomod = `module example.com/k8s // k8s.io/kubernetes v0.0.1 in a comment

go 1.26.0

require go.etcd.io/etcd/server/v3 v3.7.0

replace k8s.io/kubernetes v1.37.2 => ../kubernetes

replace (
	k8s.io/kubernetes v1.37.2 => ../kubernetes
)

require (
	k8s.io/api v0.37.2 // indirect
	k8s.io/kubernetes v1.37.2 // the pin
)
`
	for _, tc := range []struct{ gomod, want string }{
		{gomod, "v1.37.2"},
		{"module m\nrequire k8s.io/kubernetes v1.36.0\n", "v1.36.0"},
		{"module m\nreplace k8s.io/kubernetes => ../k\nrequire (\n\tk8s.io/kubernetes-x v1.0.0\n)\n", ""},
	} {
		if got := requiredVersion([]byte(tc.gomod), "k8s.io/kubernetes"); got != tc.want {
			t.Errorf("requiredVersion of\n%s= %q, want %q", tc.gomod, got, tc.want)
		}
		// hack/k8s-version.sh, which the Makefile uses, reads it the same way.
		path := filepath.Join(t.TempDir(), "go.mod")
		if err := os.WriteFile(path, []byte(tc.gomod), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(filepath.Join(root, "hack", "k8s-version.sh"), path).Output()
		if got := strings.TrimSpace(string(out)); got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("hack/k8s-version.sh on\n%s= %q (%v), want %q", tc.gomod, got, err, tc.want)
		}
	}
}

// TestVersionPinnedOnce: hack/k8s-version.sh (which the Makefile and
// hack/build-k8s.sh use) and this package read the same version from
// hack/k8s/go.mod, and the Makefile's KUBEBUILDER_ASSETS is the folder
// BinaryDir names. $K8S_VERSION overrides both the same way.
func TestVersionPinnedOnce(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("K8S_VERSION", "")
	t.Setenv("KUBEBUILDER_ASSETS", "")
	os.Unsetenv("K8S_VERSION")
	os.Unsetenv("KUBEBUILDER_ASSETS")
	goVersion, err := K8sVersionOf(root)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "hack", "k8s-version.sh")).Output()
	if err != nil {
		t.Fatalf("hack/k8s-version.sh: %v", err)
	}
	if sh := strings.TrimSpace(string(out)); sh != goVersion {
		t.Errorf("hack/k8s-version.sh says %q, testenv %q", sh, goVersion)
	}
	dir, err := BinaryDirOf(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "bin", "k8s", goVersion); dir != want {
		t.Errorf("BinaryDirOf = %s, want %s", dir, want)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("SKIPPING the Makefile check: no make on PATH")
	}
	for _, override := range []string{"", "v0.0.0-override"} {
		cmd := exec.Command("make", "-s", "--no-print-directory", "-C", root,
			"--eval=synx-print-assets: ; @echo $(KUBEBUILDER_ASSETS)", "synx-print-assets")
		cmd.Env = os.Environ()
		want := dir
		if override != "" {
			cmd.Env = append(cmd.Env, "K8S_VERSION="+override)
			t.Setenv("K8S_VERSION", override)
			if want, err = BinaryDirOf(root); err != nil {
				t.Fatal(err)
			}
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("make: %v", err)
		}
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("K8S_VERSION=%q: the Makefile's KUBEBUILDER_ASSETS is %s, testenv's binary folder %s", override, got, want)
		}
	}
}
