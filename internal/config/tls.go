package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
)

// UsesTLS reports whether a listener or a trunk peer speaks TLS.
func (c *Config) UsesTLS() (listener, peer bool) {
	for _, l := range c.SIP.Listen {
		if l.Transport == "tls" {
			listener = true
		}
	}
	for _, t := range c.Trunks {
		for _, p := range t.Peers {
			if p.Transport == "tls" {
				peer = true
			}
		}
	}
	return listener, peer
}

// validateTLS resolves the certificate paths against the config file's
// folder and loads them, so a missing or mismatched file is reported at
// its key rather than when the first phone connects.
func (c *Config) validateTLS(bad func(key, format string, args ...any)) {
	t := &c.SIP.TLS
	switch t.VerifyClient {
	case "none", "optional", "require":
	default:
		bad("sip.tls.verify_client", "must be none, optional or require; got %q", t.VerifyClient)
	}
	switch t.MinVersion {
	case "1.2", "1.3":
	default:
		bad("sip.tls.min_version", "must be 1.2 or 1.3; got %q", t.MinVersion)
	}
	dir := filepath.Dir(c.Source)
	for _, p := range []*string{&t.CertFile, &t.KeyFile, &t.CAFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	listener, _ := c.UsesTLS()
	switch {
	case listener && t.CertFile == "":
		bad("sip.tls.cert_file", "a tls listener needs a certificate: set cert_file and key_file (PEM)")
	case (t.CertFile == "") != (t.KeyFile == ""):
		bad("sip.tls.key_file", "cert_file and key_file go together")
	case t.CertFile != "":
		if _, err := t.Certificate(); err != nil {
			bad("sip.tls.cert_file", "%v", err)
		}
	}
	if (t.VerifyClient == "optional" || t.VerifyClient == "require") && t.CAFile == "" {
		bad("sip.tls.ca_file", "verify_client %s needs the CAs that sign client certificates", t.VerifyClient)
	}
	if t.CAFile != "" {
		if _, err := t.CAPool(); err != nil {
			bad("sip.tls.ca_file", "%v", err)
		}
	}
}

// Certificate loads the certificate and key.
func (t TLS) Certificate() (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load %s and %s: %w", t.CertFile, t.KeyFile, err)
	}
	return cert, nil
}

// CAPool loads CAFile; nil (the system's roots) when it is empty.
func (t TLS) CAPool() (*x509.CertPool, error) {
	if t.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
	}
	return pool, nil
}
