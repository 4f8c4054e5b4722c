package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSFiles are PEM files for a test's TLS: a CA, a server certificate it
// signed for 127.0.0.1, ::1, localhost and voxvisor.local, a client
// certificate it signed, and a client certificate from another CA that
// a server trusting only the first must refuse. Both.pem files hold the
// certificate and its key together, as baresip and socat take them.
type TLSFiles struct {
	Dir                       string
	CA                        string
	Cert, Key, Both           string // server
	ClientCert, ClientKey     string
	ClientBoth                string
	StrangerCert, StrangerKey string
}

// TLSCerts writes fresh certificates into a temporary folder.
func TLSCerts(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	f := TLSFiles{Dir: dir}
	ca, caKey := makeCert(t, "voxvisor test CA", nil, nil, true)
	f.CA = writePEM(t, dir, "ca.pem", ca.Raw, nil)
	srv, srvKey := makeCert(t, "voxvisor.local", ca, caKey, false, "voxvisor.local", "localhost")
	f.Cert = writePEM(t, dir, "server.pem", srv.Raw, nil)
	f.Key = writePEM(t, dir, "server.key", nil, srvKey)
	f.Both = writePEM(t, dir, "server-both.pem", srv.Raw, srvKey)
	cl, clKey := makeCert(t, "1001", ca, caKey, false)
	f.ClientCert = writePEM(t, dir, "client.pem", cl.Raw, nil)
	f.ClientKey = writePEM(t, dir, "client.key", nil, clKey)
	f.ClientBoth = writePEM(t, dir, "client-both.pem", cl.Raw, clKey)
	other, otherKey := makeCert(t, "another CA", nil, nil, true)
	st, stKey := makeCert(t, "stranger", other, otherKey, false, "voxvisor.local", "localhost")
	f.StrangerCert = writePEM(t, dir, "stranger.pem", st.Raw, nil)
	f.StrangerKey = writePEM(t, dir, "stranger.key", nil, stKey)
	return f
}

func makeCert(t testing.TB, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool, dns ...string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"voxvisor tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = nil
	} else if len(dns) > 0 {
		tmpl.DNSNames = dns
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t testing.TB, dir, name string, der []byte, key *ecdsa.PrivateKey) string {
	t.Helper()
	var out []byte
	if der != nil {
		out = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	if key != nil {
		kb, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})...)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
