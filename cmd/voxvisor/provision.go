package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/provisioning"
)

// Exit codes of provision plan and status, after terraform's
// -detailed-exitcode: 0 nothing to do, 2 changes pending (plan) or drift
// (status), 1 an error. apply and destroy exit 0 or 1.
const (
	exitPending = 2
)

const exitCodesHelp = `
Exit codes, for scripts and monitoring (terraform's -detailed-exitcode):
  0  the infrastructure matches the configuration
  1  an error: the plan could not be made, or a trunk cannot be applied
     (error lines: a missing base image, bridge or libvirt network, a
     /dev/kvm QEMU cannot open with domain_type kvm, a guest, image or
     volume of a trunk's name that voxvisor did not create)
  2  changes pending (plan) or drift (status)`

// newProvision is `voxvisor provision plan|apply|destroy|status`: the
// trunks' endpoints (volume, KVM guest, firewall) from the same file.
func newProvision(load func() (*config.Config, error), stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Create the trunks' media endpoints: volumes, KVM guests and firewall rules",
		Long: `provision reads the trunks' endpoint blocks and the provision block of the
configuration (-c FILE). plan shows what would change and changes nothing;
apply makes the changes (a second apply of the same file changes nothing);
destroy removes what voxvisor created; status shows each resource and its
drift.

Each trunk stands alone: one whose plan has an error (a resource of its name
that voxvisor did not create, or something apply needs that the host lacks)
is left as it is, the others are applied or destroyed, and the command
exits 1.`,
	}
	var forceStop bool
	with := func(f func(ctx context.Context, p provisioning.Infra, args []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			if cfg.Source == configs.DefaultName && !cfg.HasEndpoints() {
				return fmt.Errorf("no -c given (nor VOXVISOR_CONFIG); using the embedded config, which has no endpoints: nothing to provision; give the configuration with the trunks' endpoint blocks: voxvisor provision %s -c FILE", c.Name())
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			p, closeConn, err := provisioning.Connect(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer closeConn()
			p.SetForceStop(forceStop)
			return f(ctx, p, args)
		}
	}
	// show is a read-only command: plan, then write it one way; the exit
	// code says whether anything is to be done.
	show := func(use, short, long string, write func(*provisioning.Plan, io.Writer)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Long:  long + "\n" + exitCodesHelp,
			Args:  cobra.NoArgs,
			RunE: with(func(ctx context.Context, p provisioning.Infra, _ []string) error {
				pl, err := p.Plan(ctx)
				if err != nil {
					return err
				}
				write(pl, stdout)
				if r := pl.Refused(); len(r) > 0 {
					return &exitError{code: 1, err: fmt.Errorf("%d trunk(s) cannot be applied, see the error lines: %s", len(r), strings.Join(r, ", "))}
				}
				if pl.Pending() {
					return &exitError{code: exitPending}
				}
				return nil
			}),
		}
	}
	plan := show("plan", "Show what apply would change, per trunk and resource; changes nothing",
		`plan compares the configuration with the host and shows, per trunk and
resource, what apply would do and why, with the downtime of a guest a change
restarts. It checks what apply needs (base images, bridges, libvirt networks,
/dev/kvm for domain_type kvm) and shows what is missing as error lines.`,
		(*provisioning.Plan).Write)
	status := show("status", "Show each resource's actual state and any drift from the configuration",
		`status shows each resource as it is on the host, and how it differs from
the configuration (its drift), as plan would repair it.`,
		(*provisioning.Plan).WriteStatus)
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Make the changes plan shows; a failed trunk is rolled back",
		Long: `apply makes the changes plan shows, trunk by trunk: volume, cloud-init seed,
guest, firewall. A trunk whose step fails is rolled back (its completed steps
undone in reverse); a trunk with a plan error is left as it is. The others go
on, and apply exits 1 if any trunk failed or was refused.

A change of memory, vCPUs, network, disk or seed restarts the guest: it is
asked to shut down (ACPI) and given provision.shutdown_timeout (default 60s)
before it is powered off. --force-stop powers it off at once instead, for
guests that ignore ACPI; plan --force-stop shows the downtime it expects.`,
		Args: cobra.NoArgs,
		RunE: with(func(ctx context.Context, p provisioning.Infra, _ []string) error {
			_, err := p.Apply(ctx, stdout)
			return err
		}),
	}
	destroy := &cobra.Command{
		Use:   "destroy [TRUNK]",
		Short: "Remove what voxvisor created, for one trunk or all",
		Long: `destroy removes what voxvisor created for one trunk, or with no TRUNK for all
of them, whether or not they are still in the configuration: the guest (shut
down, then undefined), its seed and volume, its firewall rules, and of
everything also voxvisor's own nftables table. A trunk with a guest, image or
volume of its name that voxvisor did not create is left whole, and destroy
exits 1. --force-stop powers guests off at once instead of asking them to
shut down.`,
		Args: cobra.MaximumNArgs(1),
		RunE: with(func(ctx context.Context, p provisioning.Infra, args []string) error {
			trunk := ""
			if len(args) == 1 {
				trunk = args[0]
			}
			return p.Destroy(ctx, trunk, stdout)
		}),
	}
	for _, c := range []*cobra.Command{plan, apply, destroy} {
		c.Flags().BoolVar(&forceStop, "force-stop", false, "power guests off at once (virsh destroy) where a change needs them stopped, instead of an ACPI shutdown and a wait of up to provision.shutdown_timeout")
	}
	cmd.AddCommand(plan, apply, destroy, status)
	return cmd
}
