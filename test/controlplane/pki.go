package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// PKI is the cluster's certificate authority and the files signed by it. The
// CA also signs the CSRs of the controller manager's csrsigning controller,
// so one key is both the client CA and the cluster signer, as kubeadm does.
type PKI struct {
	Dir           string
	CACert, CAKey string
	CAPEM         []byte
	// SAKey and SAPub are the service-account token signing pair, shared by
	// kube-apiserver (verify and sign) and kube-controller-manager (sign).
	SAKey, SAPub string

	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial atomic.Int64
}

// Cert is a key pair on disk and in memory.
type Cert struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
}

// NewPKI writes a fresh CA and service-account key pair into dir.
func NewPKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "synx-cluster-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, caKey: key}
	p.serial.Store(1)
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	c, err := writePair(dir, "ca", der, key)
	if err != nil {
		return nil, err
	}
	p.CACert, p.CAKey, p.CAPEM = c.CertFile, c.KeyFile, c.CertPEM

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	p.SAKey, p.SAPub = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(p.SAKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.SAPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

// ClientCert issues a client certificate for user cn in groups orgs, written
// as <name>.crt and <name>.key.
func (p *PKI) ClientCert(name, cn string, orgs ...string) (*Cert, error) {
	return p.issue(name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: orgs},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// ServingCert issues a serving certificate for the given addresses and names.
func (p *PKI) ServingCert(name, cn string, ips []net.IP, dns []string) (*Cert, error) {
	return p.issue(name, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips,
		DNSNames:    dns,
	})
}

func (p *PKI) issue(name string, tmpl *x509.Certificate) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	tmpl.SerialNumber = big.NewInt(p.serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = now, now.Add(365*24*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", name, err)
	}
	return writePair(p.Dir, name, der, key)
}

func writePair(dir, name string, der []byte, key *ecdsa.PrivateKey) (*Cert, error) {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &Cert{
		CertFile: filepath.Join(dir, name+".crt"),
		KeyFile:  filepath.Join(dir, name+".key"),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	if err := os.WriteFile(c.CertFile, c.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.KeyFile, c.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// WriteKubeconfig writes a kubeconfig that reaches server with the client
// certificate c, trusting the cluster's CA.
func (p *PKI) WriteKubeconfig(path, server string, c *Cert) error {
	return p.writeKubeconfig(path, server, func(a *clientcmdapi.AuthInfo) {
		a.ClientCertificateData, a.ClientKeyData = c.CertPEM, c.KeyPEM
	})
}

// WriteTokenKubeconfig writes a kubeconfig that reaches server with a
// bearer token (a ServiceAccount's), trusting the cluster's CA.
func (p *PKI) WriteTokenKubeconfig(path, server, token string) error {
	return p.writeKubeconfig(path, server, func(a *clientcmdapi.AuthInfo) { a.Token = token })
}

func (p *PKI) writeKubeconfig(path, server string, auth func(*clientcmdapi.AuthInfo)) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["synx"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: p.CAPEM}
	a := clientcmdapi.NewAuthInfo()
	auth(a)
	cfg.AuthInfos["synx"] = a
	cfg.Contexts["synx"] = &clientcmdapi.Context{Cluster: "synx", AuthInfo: "synx"}
	cfg.CurrentContext = "synx"
	return clientcmd.WriteToFile(*cfg, path)
}
