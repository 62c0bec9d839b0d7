// Command standin is a STAND-IN for the project's real images (bin/images,
// built by `make images` from another branch): one static binary that the
// kubenode tests package as two throw-away images, a pod sandbox ("pause")
// and an HTTP echo server ("echo"). Replace both with bin/images/pause.tar
// and bin/images/echo.tar when they land.
//
//	standin pause          sleep until SIGTERM/SIGINT, reaping children
//	standin echo [-port N] answer every HTTP request with one line naming
//	                       the pod, its node and the client address
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: standin pause | echo [-port N]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "echo":
		os.Exit(echo(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "standin: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

// pause is a sandbox's first process: PID 1 of the pod's namespaces.
func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// echo serves HTTP: "pod=<POD_NAME> node=<NODE_NAME> client=<addr>".
func echo(args []string) int {
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	port := fs.Int("port", 8080, "TCP port")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pod=%s node=%s client=%s\n", pod, node, r.RemoteAddr)
	})
	srv := &http.Server{Addr: fmt.Sprintf(":%d", *port)}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		_ = srv.Close()
	}()
	fmt.Printf("standin echo: pod=%s node=%s listening on :%d\n", pod, node, *port)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
