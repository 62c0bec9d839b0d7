// Command pause is the sandbox container of the pods of test clusters: it
// holds the pod's namespaces open, does nothing, reaps the zombies that
// end up with it as PID 1 of the pod, and exits 0 on SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	showVersion := flag.Bool("v", false, "Print the version and exit.")
	flag.Parse()
	if *showVersion {
		fmt.Println("pause", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, orphans are not reaped here")
	}
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	reap() // children that ended before the handler was there
	for s := range sig {
		if s != unix.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited. Signals merge, so one
// SIGCHLD may stand for several children.
func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
