// Command bench-report draws the plots and the summary of a bench-compare
// run again from its CSV, without measuring again:
//
//	go run ./test/bench/cmd/bench-report -csv docs/bench/results.csv -out docs/bench
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/synterix/synterix-kube-proxy/test/bench/report"
)

func main() {
	csv := flag.String("csv", "docs/bench/results.csv", "CSV written by make bench-compare.")
	out := flag.String("out", "docs/bench", "Folder of the plots and summary.md.")
	flag.Parse()
	if err := report.Write(*csv, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bench-report:", err)
		os.Exit(1)
	}
}
