package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"
)

// emit prints v as JSON or YAML when -o asks for it, else with human.
func (o *options) emit(v any, human func(w io.Writer) error) error {
	switch o.output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(o.io.Out, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = o.io.Out.Write(b)
		return err
	}
	return human(o.io.Out)
}

// table writes rows aligned in columns.
func table(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		for i, c := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			if c == "" {
				c = "-"
			}
			fmt.Fprint(tw, c)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// age is how long ago t was, "-" for never.
func (o *options) age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(o.now().Sub(t)) + " ago"
}

// indent writes lines with a prefix.
func indent(w io.Writer, prefix string, lines ...string) {
	for _, l := range lines {
		fmt.Fprintln(w, prefix+l)
	}
}

// plural is "1 thing" or "N things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
