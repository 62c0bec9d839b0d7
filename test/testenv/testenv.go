// Package testenv starts the real etcd and kube-apiserver that the tests talk to.
//
// The binaries are built from the Go module proxy by hack/build-k8s.sh (make
// k8s-binaries) into bin/k8s/<version>/; KUBEBUILDER_ASSETS overrides where they
// are looked for. Nothing is downloaded at test time.
package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	proxyv1alpha1 "github.com/synterix/synterix-kube-proxy/api/v1alpha1"
)

// K8sVersion is the version of the control-plane binaries the tests run.
const K8sVersion = "v1.37.2"

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

// BinaryDir returns the folder that holds etcd, kube-apiserver and kubectl.
func BinaryDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "k8s", K8sVersion), nil
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
	bin, err := BinaryDir()
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
