package server

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// tlsConfigs are the TLS settings of the listeners and of the
// connections sipgo dials. Both read the certificate through cert, so
// ReloadCertificate takes effect on the next handshake.
type tlsConfigs struct {
	cert   atomic.Pointer[tls.Certificate] // nil without cert_file
	server *tls.Config                     // nil without a certificate
	client *tls.Config
}

func newTLSConfigs(c TLS) (*tlsConfigs, error) {
	t := &tlsConfigs{}
	pool := c.CAs
	min := uint16(tls.VersionTLS12)
	if c.MinVersion == "1.3" {
		min = tls.VersionTLS13
	}
	if c.Certificate != nil {
		cert, err := c.Certificate()
		if err != nil {
			return nil, fmt.Errorf("sip.tls.cert_file: %w", err)
		}
		t.cert.Store(&cert)
		t.server = &tls.Config{
			MinVersion: min,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return t.cert.Load(), nil
			},
			ClientCAs: pool,
		}
		switch c.VerifyClient {
		case "optional":
			t.server.ClientAuth = tls.VerifyClientCertIfGiven
		case "require":
			t.server.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	t.client = &tls.Config{
		MinVersion: min,
		RootCAs:    pool,
		// A peer we dial is checked against its host name or IP address
		// (sipgo sets ServerName); verify_server: false is for labs only.
		InsecureSkipVerify: !c.VerifyServer,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := t.cert.Load(); cert != nil {
				return cert, nil
			}
			return &tls.Certificate{}, nil // no certificate to offer
		},
	}
	return t, nil
}

// ReloadCertificate loads the certificate again with load (a renewed
// certificate, on SIGHUP); the running one stays on error. Connections
// already up keep the certificate they were made with. A nil load, or a
// server without a certificate, changes nothing.
func (s *Server) ReloadCertificate(load func() (tls.Certificate, error)) error {
	if s.tlsc == nil || s.tlsc.server == nil || load == nil {
		return nil
	}
	cert, err := load()
	if err != nil {
		return fmt.Errorf("sip.tls.cert_file: %w", err)
	}
	s.tlsc.cert.Store(&cert)
	return nil
}
