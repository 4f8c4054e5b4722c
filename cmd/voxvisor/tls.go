package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/voxvisor/voxvisor/internal/tlscert"
)

// newTLS is `voxvisor tls cert`: a private CA and the certificates it
// signs, for SIP over TLS without a public CA.
func newTLS(stdout io.Writer) *cobra.Command {
	var (
		dir   string
		name  string
		hosts []string
		days  int
	)
	cert := &cobra.Command{
		Use:   "cert",
		Short: "Issue a certificate from a private CA (made in --dir the first time)",
		Long: `cert makes DIR/ca.pem and DIR/ca.key the first time (a private CA: give ca.pem
to phones and carriers to trust, keep ca.key safe), then issues DIR/NAME.pem
(the certificate followed by the CA's) and DIR/NAME.key, for the names and
addresses given with --host. Run it again with another --name for more
certificates from the same CA, e.g. client certificates for phones when
sip.tls.verify_client is require. Existing files are never replaced.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if name == "server" && len(hosts) == 0 {
				return errors.New("--host is required for a server certificate: the names and IP addresses phones and carriers use to reach this server")
			}
			validity := time.Duration(days) * 24 * time.Hour
			caPEM, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
			files := map[string][]byte{}
			ca, err := tlscert.LoadAuthority(caPEM, caKey)
			switch {
			case errors.Is(err, os.ErrNotExist):
				if ca, err = tlscert.NewAuthority("voxvisor CA", 10*365*24*time.Hour); err != nil {
					return err
				}
				kb, err := ca.KeyPEM()
				if err != nil {
					return err
				}
				files["ca.pem"], files["ca.key"] = ca.CertPEM(), kb
			case err != nil:
				return fmt.Errorf("the CA in %s: %w", dir, err)
			}
			cn := name
			if len(hosts) > 0 {
				cn = hosts[0]
			}
			leaf, err := ca.Issue(cn, hosts, validity)
			if err != nil {
				return err
			}
			files[name+".pem"], files[name+".key"] = leaf.CertPEM, leaf.KeyPEM
			if err := tlscert.WriteNew(dir, files); err != nil {
				return err
			}
			abs, _ := filepath.Abs(dir)
			fmt.Fprintf(stdout, "wrote %s/%s.pem and %s.key (valid %d days)", abs, name, name, days)
			if _, ok := files["ca.pem"]; ok {
				fmt.Fprintf(stdout, ", and the CA %s/ca.pem, ca.key", abs)
			}
			if name != "server" {
				fmt.Fprintf(stdout, "\ninstall %s.pem and %s.key on the phone or peer it is for; ca.pem is what it trusts\n", name, name)
				return nil
			}
			fmt.Fprintf(stdout, "\n\nsip:\n  listen:\n    - {transport: tls, address: IP:5061}\n  tls:\n    cert_file: %s/server.pem\n    key_file: %s/server.key\n    ca_file: %s/ca.pem\n", abs, abs, abs)
			return nil
		},
	}
	cert.Flags().StringVar(&dir, "dir", "tls", "folder for the CA and the certificates")
	cert.Flags().StringVar(&name, "name", "server", "file name of the certificate (NAME.pem, NAME.key)")
	cert.Flags().StringSliceVar(&hosts, "host", nil, "DNS name or IP address the certificate names (repeat, or comma-separated)")
	cert.Flags().IntVar(&days, "days", 825, "validity in days")
	cmd := &cobra.Command{Use: "tls", Short: "Certificates for SIP over TLS"}
	cmd.AddCommand(cert)
	return cmd
}
