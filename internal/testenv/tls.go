package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/voxvisor/voxvisor/internal/tlscert"
)

// TLSFiles are PEM files for a test's TLS: a CA, a server certificate it
// signed for 127.0.0.1, ::1, localhost and voxvisor.local, a client
// certificate it signed, and a certificate for the same names from
// another CA, which a peer trusting only the first must refuse. The
// Both files hold the certificate and its key together, as baresip and
// socat take them.
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
	names := []string{"voxvisor.local", "localhost", "127.0.0.1", "::1"}
	ca, err := tlscert.NewAuthority("voxvisor test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlscert.NewAuthority("another CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(a *tlscert.Authority, cn string, hosts []string) tlscert.Issued {
		is, err := a.Issue(cn, hosts, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return is
	}
	write := func(name string, parts ...[]byte) string {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srv, cl, st := issue(ca, "voxvisor.local", names), issue(ca, "1001", nil), issue(other, "stranger", names)
	return TLSFiles{
		Dir: dir, CA: write("ca.pem", ca.CertPEM()),
		Cert: write("server.pem", srv.CertPEM), Key: write("server.key", srv.KeyPEM),
		Both:       write("server-both.pem", srv.CertPEM, srv.KeyPEM),
		ClientCert: write("client.pem", cl.CertPEM), ClientKey: write("client.key", cl.KeyPEM),
		ClientBoth:   write("client-both.pem", cl.CertPEM, cl.KeyPEM),
		StrangerCert: write("stranger.pem", st.CertPEM), StrangerKey: write("stranger.key", st.KeyPEM),
	}
}
