// Package testenv starts the real etcd and kube-apiserver that the tests talk to.
//
// The binaries are built from the Go module proxy by hack/build-k8s.sh (make
// k8s-binaries) into bin/k8s/<version>/; KUBEBUILDER_ASSETS overrides where they
// are looked for. Nothing is downloaded at test time. The version is pinned in
// one place, the requirement of k8s.io/kubernetes in hack/k8s/go.mod, which the
// Makefile and hack/build-k8s.sh read through hack/k8s-version.sh.
package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// RepoRoot returns the root of this repository, found by walking up from the
// working directory to the go.mod of the module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/synterix/synterix-kube-proxy\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/synterix/synterix-kube-proxy above the working directory")
		}
		dir = parent
	}
}

// K8sVersionOf returns $K8S_VERSION when set (the Makefile exports the one
// it builds and runs), else the version of k8s.io/kubernetes that
// root/hack/k8s/go.mod requires: the one place the project pins it.
func K8sVersionOf(root string) (string, error) {
	if v := os.Getenv("K8S_VERSION"); v != "" {
		return v, nil
	}
	path := filepath.Join(root, "hack", "k8s", "go.mod")
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if v := requiredVersion(data, "k8s.io/kubernetes"); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("%s requires no version of k8s.io/kubernetes", path)
}

// requiredVersion returns the version of module that a go.mod requires, in
// a require line or block, or "" (replace and exclude lines do not count).
func requiredVersion(gomod []byte, module string) string {
	block := ""
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case block != "" && f[0] == ")":
			block = ""
			continue
		case block == "" && len(f) == 2 && f[1] == "(":
			block = f[0]
			continue
		case block == "" && f[0] == "require":
			f = f[1:]
		case block != "require":
			continue
		}
		if len(f) == 2 && f[0] == module && strings.HasPrefix(f[1], "v") {
			return f[1]
		}
	}
	return ""
}

// BinaryDir returns the folder that holds etcd, kube-apiserver and kubectl
// for the repository that holds the working directory; see BinaryDirOf.
func BinaryDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return BinaryDirOf(root)
}

// BinaryDirOf returns $KUBEBUILDER_ASSETS when set, else
// root/bin/k8s/<K8sVersionOf(root)>, where make k8s-binaries builds them.
func BinaryDirOf(root string) (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	v, err := K8sVersionOf(root)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "k8s", v), nil
}

// Scheme returns a scheme with the core Kubernetes kinds and this project's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := proxyv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// New returns an envtest environment that runs the real binaries and installs
// this project's CRDs from config/crd/bases. Call Start on it, and Stop when done.
func New() (*envtest.Environment, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	bin, err := BinaryDirOf(root)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return nil, fmt.Errorf("%s is missing from %s: run 'make k8s-binaries' first: %w", name, bin, err)
		}
	}
	return &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
	}, nil
}
