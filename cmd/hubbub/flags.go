package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// envFlags is a flag set whose every flag may also come from an environment
// variable HUBBUB_<NAME> (upper case, dashes as underscores). A flag on the
// command line wins over the environment. Flags are listed in -h by group,
// and checks added with the check methods run after parsing.
type envFlags struct {
	*flag.FlagSet
	groups []flagGroup
	checks []func() error
}

type flagGroup struct {
	title string
	names []string
}

func newEnvFlags(name string) *envFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once by the caller; -h prints usage below
	return &envFlags{FlagSet: fs}
}

func envName(flagName string) string {
	return "HUBBUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// group starts a titled group: flags defined after it are listed under it.
func (f *envFlags) group(title string) { f.groups = append(f.groups, flagGroup{title: title}) }

func (f *envFlags) note(name string) {
	if len(f.groups) == 0 {
		f.group("")
	}
	g := &f.groups[len(f.groups)-1]
	g.names = append(g.names, name)
}

// The define methods record each flag in the current group.
func (f *envFlags) str(p *string, name, value, usage string) {
	f.StringVar(p, name, value, usage)
	f.note(name)
}

func (f *envFlags) boolean(p *bool, name string, value bool, usage string) {
	f.BoolVar(p, name, value, usage)
	f.note(name)
}

func (f *envFlags) integer(p *int, name string, value int, usage string) {
	f.IntVar(p, name, value, usage)
	f.note(name)
}

func (f *envFlags) float(p *float64, name string, value float64, usage string) {
	f.Float64Var(p, name, value, usage)
	f.note(name)
}

func (f *envFlags) duration(p *time.Duration, name string, value time.Duration, usage string) {
	f.DurationVar(p, name, value, usage)
	f.note(name)
}

// positive refuses a value that is zero or negative.
func (f *envFlags) positive(name string, v func() float64) {
	f.checks = append(f.checks, func() error {
		if x := v(); x <= 0 {
			return fmt.Errorf("--%s: must be greater than zero, got %v", name, f.Lookup(name).Value)
		}
		return nil
	})
}

// nonNegative refuses a negative value (zero keeps its documented meaning).
func (f *envFlags) nonNegative(name string, v func() float64) {
	f.checks = append(f.checks, func() error {
		if x := v(); x < 0 {
			return fmt.Errorf("--%s: must not be negative, got %v", name, f.Lookup(name).Value)
		}
		return nil
	})
}

// between refuses a value outside [lo, hi].
func (f *envFlags) between(name string, lo, hi float64, v func() float64) {
	f.checks = append(f.checks, func() error {
		if x := v(); x < lo || x > hi {
			return fmt.Errorf("--%s: must be between %v and %v, got %v", name, lo, hi, f.Lookup(name).Value)
		}
		return nil
	})
}

// parse reads the environment, then the arguments, then runs the checks. On
// -h it prints the grouped usage to stdout and returns flag.ErrHelp.
func (f *envFlags) parse(args []string) error {
	var err error
	f.VisitAll(func(fl *flag.Flag) {
		fl.Usage = fmt.Sprintf("%s (env %s)", fl.Usage, envName(fl.Name))
		if v, ok := os.LookupEnv(envName(fl.Name)); ok && err == nil {
			if e := fl.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(fl.Name), v, e)
			}
		}
	})
	if err != nil {
		return err
	}
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.usage(os.Stdout)
		}
		return err
	}
	for _, check := range f.checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// usage lists the flags by group.
func (f *envFlags) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: hubbub %s [flags]\n", f.Name())
	listed := map[string]bool{}
	for _, g := range f.groups {
		if g.title != "" {
			fmt.Fprintf(w, "\n%s:\n", g.title)
		}
		for _, name := range g.names {
			listed[name] = true
			printFlag(w, f.Lookup(name))
		}
	}
	f.VisitAll(func(fl *flag.Flag) { // flags defined without a group
		if !listed[fl.Name] {
			printFlag(w, fl)
		}
	})
}

func printFlag(w io.Writer, fl *flag.Flag) {
	name, usage := flag.UnquoteUsage(fl)
	line := "  --" + fl.Name
	if name != "" {
		line += " " + name
	}
	fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
	if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" {
		fmt.Fprintf(w, " (default %s)", fl.DefValue)
	}
	fmt.Fprintln(w)
}

// usageError prints a parse error and a pointer to -h.
func usageError(cmd string, err error) int {
	fmt.Fprintf(os.Stderr, "hubbub %s: %v\nRun 'hubbub %s -h' for the flags.\n", cmd, err, cmd)
	return 2
}
