// Command voxvisor is the softswitch: `serve` runs the registrar and
// proxy, `config check` validates a configuration file. This file is
// wiring only; the logic lives in the packages it calls.
package main

import (
	"github.com/voxvisor/voxvisor/sip/capture"

	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"

	siplib "github.com/emiago/sipgo/sip"
	"github.com/spf13/cobra"

	"github.com/voxvisor/voxvisor/configs"
	"github.com/voxvisor/voxvisor/internal/config"
	"github.com/voxvisor/voxvisor/internal/logging"
	"github.com/voxvisor/voxvisor/internal/softswitch"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line and returns the exit code: 0, 1 after an
// error, or the code the command chose (provision plan and status exit 2
// when something is to be done). Each error is printed once, here.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code, err = ee.code, ee.err
	}
	if err != nil {
		printErr(stderr, err)
	}
	return code
}

// exitError ends the program with code, printing err when it is set.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// printErr writes an error for people. A configuration error is written
// as it is, each line starting with file:line (editors and CI jump to
// it); any other error's lines start with "voxvisor: ".
func printErr(w io.Writer, err error) {
	var one *config.Error
	var many config.Errors
	if errors.As(err, &many) || errors.As(err, &one) {
		fmt.Fprintln(w, err)
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(w, "voxvisor:", line)
	}
}

// tuneGC sets a soft memory limit of 1 GiB, past which the collector
// works harder rather than let the heap grow (GOMEMLIMIT overrides it).
// A higher GOGC was measured and bought no CPU per call (see BENCHMARKS.md).
func tuneGC() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(1 << 30)
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var cfgPath string
	root := &cobra.Command{
		Use:           "voxvisor",
		Short:         "A SIP softswitch: registrar, stateful proxy, media relay and trunk gateway",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVarP(&cfgPath, "config", "c", "", "configuration file (default: $VOXVISOR_CONFIG, else the embedded default)")
	load := func() (*config.Config, error) {
		path := cfgPath
		if path == "" {
			path = os.Getenv("VOXVISOR_CONFIG")
		}
		if path == "" {
			return config.Load(configs.DefaultName, configs.Default)
		}
		return config.LoadFile(path)
	}
	// loadToServe is load plus what serve refuses beyond validation (a
	// demo password off loopback): serve, its reloads and config check
	// all go through it, so config check passes exactly what serve runs.
	loadToServe := func() (*config.Config, error) {
		cfg, err := load()
		if err != nil {
			return nil, err
		}
		if err := cfg.CheckExposure(); err != nil {
			return nil, err
		}
		return cfg, nil
	}

	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the softswitch",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadToServe()
			if err != nil {
				return err
			}
			log := logging.New(stderr, cfg.Log.Level, cfg.Log.Format)
			tuneGC()
			var trace io.Writer = stderr
			if sl := cfg.Log.Syslog; sl.Enabled {
				w, err := logging.Syslog(sl.Network, sl.Address, sl.Facility, sl.Tag)
				if err != nil {
					return err
				}
				defer w.Close()
				log = slog.New(logging.Fanout(log.Handler(), logging.NewSyslogHandler(w, logging.ParseLevel(cfg.Log.Level))))
				if cfg.Log.TraceSIP {
					tw, err := logging.Syslog(sl.Network, sl.Address, sl.Facility, sl.Tag+"-trace")
					if err != nil {
						return err
					}
					defer tw.Close()
					trace = tw
				}
			}
			if cfg.Log.TraceSIP {
				defer capture.Attach(logging.NewTracer(trace))()
			}
			// sipgo logs some things (connection reference counts) through its
			// package logger rather than the ones the server hands it: route
			// them through the same filter, into the same log.
			siplib.SetDefaultLogger(logging.Library(log.With("component", "sipgo"), slog.LevelError+4))
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go func() {
				// The first signal drains; a second one stops at once.
				<-ctx.Done()
				stop()
			}()
			sw, err := softswitch.New(cfg, log)
			if err != nil {
				return err
			}
			// VOXVISOR_CPUPROFILE=FILE profiles the whole run, for
			// reading a bench load with go tool pprof.
			if path := os.Getenv("VOXVISOR_CPUPROFILE"); path != "" {
				f, err := os.Create(path)
				if err != nil {
					return fmt.Errorf("VOXVISOR_CPUPROFILE: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("VOXVISOR_CPUPROFILE: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			// VOXVISOR_MEMPROFILE=FILE writes a heap profile at exit: with
			// -sample_index=alloc_space it shows what the run allocated.
			if path := os.Getenv("VOXVISOR_MEMPROFILE"); path != "" {
				defer func() {
					f, err := os.Create(path)
					if err == nil {
						err = pprof.Lookup("allocs").WriteTo(f, 0)
						f.Close()
					}
					if err != nil {
						log.Error("VOXVISOR_MEMPROFILE not written", "error", err)
					}
				}()
			}
			sw.Reloader = loadToServe
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						sw.ReloadNow() // logs its own outcome
					}
				}
			}()
			log.Info("voxvisor starting", "version", version, "config", cfg.Source)
			err = sw.Serve(ctx)
			log.Info("voxvisor stopped")
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}

	check := &cobra.Command{
		Use:   "check",
		Short: "Validate the configuration as serve would, without starting anything",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadToServe()
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: ok (%d users, %d listeners)\n", cfg.Source, len(cfg.Users), len(cfg.SIP.Listen))
			return nil
		},
	}
	cfgCmd := &cobra.Command{Use: "config", Short: "Work with configuration files"}
	cfgCmd.AddCommand(check)

	ver := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(stdout, "voxvisor", version)
		},
	}
	root.AddCommand(serve, cfgCmd, ver, newCtl(stdout), newProvision(load, stdout, stderr), newTLS(stdout))
	return root
}
