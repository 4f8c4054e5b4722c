package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/provisioning"
)

// newProvision is `voxvisor provision plan|apply|destroy|status`: the
// trunks' endpoints (volume, KVM guest, firewall) from the same file.
func newProvision(load func() (*config.Config, error), stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Create the trunks' media endpoints: volumes, KVM guests and firewall rules",
		Long: `provision reads the trunks' endpoint blocks and the provision block of the
configuration. plan shows what would change and changes nothing; apply makes
the changes (a second apply of the same file changes nothing); destroy
removes what voxvisor created; status shows each resource and its drift.`,
	}
	with := func(f func(ctx context.Context, p *provisioning.Provisioner, args []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			p, closeConn, err := provisioning.Open(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer closeConn()
			return f(ctx, p, args)
		}
	}
	// show is a read-only command: plan, then write it one way.
	show := func(use, short string, write func(*provisioning.Plan, io.Writer)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: with(func(ctx context.Context, p *provisioning.Provisioner, _ []string) error {
				pl, err := p.Plan(ctx)
				if err != nil {
					return err
				}
				write(pl, stdout)
				return nil
			}),
		}
	}
	plan := show("plan", "Show what apply would change, per trunk and resource; changes nothing", (*provisioning.Plan).Write)
	status := show("status", "Show each resource's actual state and any drift from the configuration", (*provisioning.Plan).WriteStatus)
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Make the changes plan shows; a failed trunk is rolled back",
		Args:  cobra.NoArgs,
		RunE: with(func(ctx context.Context, p *provisioning.Provisioner, _ []string) error {
			_, err := p.Apply(ctx, stdout)
			return err
		}),
	}
	destroy := &cobra.Command{
		Use:   "destroy [TRUNK]",
		Short: "Remove what voxvisor created, for one trunk or all",
		Args:  cobra.MaximumNArgs(1),
		RunE: with(func(ctx context.Context, p *provisioning.Provisioner, args []string) error {
			trunk := ""
			if len(args) == 1 {
				trunk = args[0]
			}
			return p.Destroy(ctx, trunk, stdout)
		}),
	}
	cmd.AddCommand(plan, apply, destroy, status)
	return cmd
}
