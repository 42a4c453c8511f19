// Command hubbub runs and talks to Hubbub servers.
//
//	hubbub serve     run a server
//	hubbub chat      chat in a room over standard input and output
//	hubbub version   print the version
package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:])
	case "chat":
		return chat(args[1:])
	case "bench":
		return bench(args[1:])
	case "version", "--version", "-version":
		fmt.Println("hubbub", versionString())
		return 0
	case "help", "-h", "--help":
		usage()
		return 0
	}
	fmt.Fprintf(os.Stderr, "hubbub: unknown command %q\n", args[0])
	usage()
	return 2
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: hubbub <command> [flags]

commands:
  serve     run a Hubbub server (hubbub serve -h lists its flags)
  chat      chat in a room from the terminal: stdin lines are published,
            messages are printed (hubbub chat -h lists its flags)
  bench     load-test a server on this machine (hubbub bench -h)
  version   print the version
`)
}
