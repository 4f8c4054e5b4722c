package location

import (
	"crypto/tls"
	"net"
)

// tlsConfig verifies Redis's certificate against the system roots, for
// the host of addr.
func tlsConfig(addr string) *tls.Config {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
}
