package main

import (
	"encoding/json"
	"fmt"
	"github.com/voxvisor/voxvisor/internal/cluster"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// newCtl is `voxvisor ctl`: the admin API from the command line, as
// tables by default or JSON with -o json.
func newCtl(stdout io.Writer) *cobra.Command {
	var base, output string
	ctl := &cobra.Command{
		Use:   "ctl",
		Short: "Inspect and act on a running voxvisor through its admin API",
	}
	ctl.PersistentFlags().StringVar(&base, "admin", "http://127.0.0.1:8060", "the admin API's URL")
	ctl.PersistentFlags().StringVarP(&output, "output", "o", "table", "table or json")
	call := func(method, path string, out any) error {
		req, err := http.NewRequest(method, strings.TrimRight(base, "/")+path, nil)
		if err != nil {
			return err
		}
		if tok := os.Getenv("VOXVISOR_ADMIN_TOKEN"); tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		c := &http.Client{Timeout: 10 * time.Second}
		res, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("admin API at %s: %w (is voxvisor running, with admin.listen there?)", base, err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 300 {
			return fmt.Errorf("admin API: %s: %s", res.Status, strings.TrimSpace(string(body)))
		}
		if output == "json" {
			_, err := stdout.Write(body)
			return err
		}
		return json.Unmarshal(body, out)
	}
	table := func(head string, rows [][]string) {
		if output == "json" {
			return
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, head)
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		tw.Flush()
	}

	ctl.AddCommand(&cobra.Command{
		Use:   "registrations",
		Short: "List registered contacts",
		RunE: func(*cobra.Command, []string) error {
			var bs []struct {
				AOR, Contact, Source, Transport string
				ExpiresIn                       int `json:"expires_in"`
				NAT                             bool
				Path                            []string
			}
			if err := call("GET", "/api/v1/registrations", &bs); err != nil {
				return err
			}
			var rows [][]string
			for _, b := range bs {
				nat := "no"
				switch {
				case len(b.Path) > 0:
					nat = "via " + b.Path[0]
				case b.NAT:
					nat = "yes"
				}
				rows = append(rows, []string{b.AOR, b.Contact, b.Transport + ":" + b.Source, nat, fmt.Sprint(b.ExpiresIn)})
			}
			table("AOR\tCONTACT\tFROM\tNAT\tEXPIRES", rows)
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use:   "calls",
		Short: "List calls in progress with their media statistics",
		RunE: func(*cobra.Command, []string) error {
			var cs []struct {
				CallID    string `json:"call_id"`
				From, To  string
				Direction string
				Trunk     string
				Start     time.Time
				Answer    *time.Time
				Media     []struct {
					Caller, Callee struct {
						Packets uint64
						SRTP    bool
					}
				}
			}
			if err := call("GET", "/api/v1/calls", &cs); err != nil {
				return err
			}
			var rows [][]string
			for _, c := range cs {
				state := "ringing"
				if c.Answer != nil {
					state = "up " + time.Since(*c.Answer).Round(time.Second).String()
				}
				pk := ""
				for _, m := range c.Media {
					pk += fmt.Sprintf("%d/%d", m.Caller.Packets, m.Callee.Packets)
					if m.Caller.SRTP || m.Callee.SRTP {
						pk += " srtp"
					}
					pk += " "
				}
				rows = append(rows, []string{c.CallID, c.From, c.To, c.Direction, c.Trunk, state, strings.TrimSpace(pk)})
			}
			table("CALL-ID\tFROM\tTO\tDIRECTION\tTRUNK\tSTATE\tRTP IN (CALLER/CALLEE)", rows)
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use:   "trunks",
		Short: "List trunks, their channels and registration state",
		RunE: func(*cobra.Command, []string) error {
			var ts []struct {
				Name         string
				Channels     int
				MaxChannels  int `json:"max_channels"`
				Registration *struct {
					Registered bool
					LastError  string `json:"last_error"`
				}
			}
			if err := call("GET", "/api/v1/trunks", &ts); err != nil {
				return err
			}
			var rows [][]string
			for _, t := range ts {
				reg := "-"
				if t.Registration != nil {
					reg = "registered"
					if !t.Registration.Registered {
						reg = "failing: " + t.Registration.LastError
					}
				}
				limit := "unlimited"
				if t.MaxChannels > 0 {
					limit = fmt.Sprint(t.MaxChannels)
				}
				rows = append(rows, []string{t.Name, fmt.Sprintf("%d/%s", t.Channels, limit), reg})
			}
			table("TRUNK\tCHANNELS\tREGISTRATION", rows)
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use:   "cluster",
		Short: "List the cluster's live nodes: heartbeats, addresses, the trunks each keeps registered, the registrations and calls each holds",
		RunE: func(*cobra.Command, []string) error {
			var nodes []cluster.Node
			if err := call("GET", "/api/v1/cluster", &nodes); err != nil {
				return err
			}
			var rows [][]string
			for _, n := range nodes {
				name := n.Name
				if n.Self {
					name += " (this)"
				}
				trunks := strings.Join(n.Registrations, ",")
				if trunks == "" {
					trunks = "-"
				}
				rows = append(rows, []string{name, strings.Join(n.SIP, " "), time.Since(n.Heartbeat).Round(100*time.Millisecond).String() + " ago",
					time.Since(n.Started).Round(time.Second).String(), trunks, fmt.Sprint(n.Bindings), fmt.Sprint(n.Calls)})
			}
			table("NODE\tSIP\tHEARTBEAT\tUP\tTRUNK REGISTRATIONS\tREGISTRATIONS\tCALLS", rows)
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use:   "reload",
		Short: "Reload users, dial plan and trunks from the configuration file",
		RunE: func(*cobra.Command, []string) error {
			var out map[string]string
			if err := call("POST", "/api/v1/reload", &out); err != nil {
				return err
			}
			if output != "json" {
				fmt.Fprintln(stdout, "reloaded")
			}
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use:   "hangup CALL-ID",
		Short: "End an answered call with a BYE to both sides",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var out map[string]string
			if err := call("DELETE", "/api/v1/calls/"+url.PathEscape(args[0]), &out); err != nil {
				return err
			}
			if output != "json" {
				fmt.Fprintln(stdout, "hung up", args[0])
			}
			return nil
		},
	})
	ctl.AddCommand(&cobra.Command{
		Use:   "unregister AOR [CONTACT]",
		Short: "Remove a registration (every contact of the AOR without CONTACT)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(_ *cobra.Command, args []string) error {
			q := url.Values{"aor": {args[0]}}
			if len(args) == 2 {
				q.Set("contact", args[1])
			}
			var out map[string]int
			if err := call("DELETE", "/api/v1/registrations?"+q.Encode(), &out); err != nil {
				return err
			}
			if output != "json" {
				fmt.Fprintf(stdout, "removed %d binding(s) of %s\n", out["removed"], args[0])
			}
			return nil
		},
	})
	return ctl
}
