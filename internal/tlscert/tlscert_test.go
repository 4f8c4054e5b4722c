package tlscert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIssueVerifies(t *testing.T) {
	ca, err := NewAuthority("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue("pbx.example.net", []string{"pbx.example.net", "192.0.2.10"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 2 {
		t.Fatalf("chain has %d certificates, want the leaf and the CA", len(pair.Certificate))
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, name := range []string{"pbx.example.net", "192.0.2.10"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example.net"}); err == nil {
		t.Error("verified for a name it does not carry")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("not usable as a client certificate: %v", err)
	}
}

func TestLoadAuthorityAndWriteNew(t *testing.T) {
	dir := t.TempDir()
	ca, _ := NewAuthority("test CA", time.Hour)
	kb, _ := ca.KeyPEM()
	if err := WriteNew(dir, map[string][]byte{"ca.pem": ca.CertPEM(), "ca.key": kb}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "ca.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
	back, err := LoadAuthority(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"))
	if err != nil || !back.Cert.Equal(ca.Cert) {
		t.Fatalf("load: %v", err)
	}
	// Nothing is replaced, and nothing is half written.
	err = WriteNew(dir, map[string][]byte{"new.pem": []byte("x"), "ca.pem": []byte("y")})
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("WriteNew over an existing file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.pem")); err == nil {
		t.Error("a refused WriteNew wrote a file")
	}
	other, _ := NewAuthority("other", time.Hour)
	ob, _ := other.KeyPEM()
	os.WriteFile(filepath.Join(dir, "other.key"), ob, 0o600)
	if _, err := LoadAuthority(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other.key")); err == nil {
		t.Fatal("a CA loaded with another CA's key")
	}
}
