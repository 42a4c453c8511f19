package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// envFlags is a flag set whose every flag may also come from an environment
// variable HUBBUB_<NAME> (upper case, dashes as underscores). A flag on the
// command line wins over the environment.
type envFlags struct {
	*flag.FlagSet
}

func newEnvFlags(name string) envFlags {
	return envFlags{flag.NewFlagSet(name, flag.ContinueOnError)}
}

func envName(flagName string) string {
	return "HUBBUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse reads the environment, then the arguments.
func (f envFlags) parse(args []string) error {
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
	return f.Parse(args)
}
