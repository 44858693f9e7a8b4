// The control plane starts a real etcd, kube-apiserver (with the aggregation layer) and
// kube-controller-manager (deployment, replicaset and HPA controllers) on loopback for the e2e suite, with
// generated certificates, and stops every process it started.

package localcluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

type keyPair struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
}

func newCA(cn string) (*keyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &keyPair{cert: cert, key: key}, err
}

// sign issues a leaf certificate: a server cert when hosts are given (good for client auth too, as KEDA's
// mutual TLS wants one leaf for both ends), else a client cert.
func (ca *keyPair) sign(cn string, orgs []string, hosts []string) (*keyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &keyPair{cert: cert, key: key}, err
}

// write stores name.crt and name.key under dir.
func (kp *keyPair) write(dir, name string) (crt, key string, err error) {
	crt, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err = os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.cert.Raw}), 0o600); err != nil {
		return
	}
	err = os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(kp.key)}), 0o600)
	return
}

func writeKubeconfig(path, server, caFile, crt, key, user string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: %q, certificate-authority: %q}
users:
- name: %s
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: local
  context: {cluster: local, user: %s}
current-context: local
`, server, caFile, user, crt, key, user)), 0o600)
}

// WriteMutualTLS writes ca.crt, tls.crt and tls.key into dir: a fresh CA and one leaf for hosts that is
// good for both server and client authentication, the layout KEDA's operator and metrics server expect
// in their --cert-dir for the gRPC link between them.
func WriteMutualTLS(dir string, hosts ...string) error {
	ca, err := newCA("e2e-mtls-ca")
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return fmt.Errorf("WriteMutualTLS needs at least one host")
	}
	leaf, err := ca.sign("e2e-mtls", nil, hosts)
	if err != nil {
		return err
	}
	if _, _, err := ca.write(dir, "ca"); err != nil {
		return err
	}
	_, _, err = leaf.write(dir, "tls")
	return err
}
