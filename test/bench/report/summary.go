package report

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Summary writes the Markdown summary of a run: the machine, for each size
// the ratios of each of our contenders to the better kube-proxy mode with
// the targets, every figure of every contender, and how long each
// size took.
func Summary(w io.Writer, t *Table, m Meta) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# bench-compare: results of the run of %s\n\n", m.Run)
	fmt.Fprintf(&b, "Commit %s. Machine: %s cores (%s), %s, kernel %s, %s, %s. Load average (1 min) during the run: %s.\n\n",
		m.Commit, m.Cores, m.CPU, m.Memory, m.Kernel, m.IPTables, m.NFT, t.loadRange())
	fmt.Fprintf(&b, "Each value: the median over the repetitions (a series: the quantile of all samples of all repetitions). Generated from results.csv by test/bench/report.\n\n")
	for _, note := range t.skipped() {
		fmt.Fprintf(&b, "- %s\n", note)
	}
	b.WriteString("\n")
	for _, size := range t.Sizes {
		for _, ours := range t.Contenders {
			if isOurs(ours) {
				t.ratios(&b, size, ours)
			}
		}
	}
	for _, size := range t.Sizes {
		t.figures(&b, size)
	}
	b.WriteString("## Durations\n\n| size | loading the Services | the whole size |\n| --- | --- | --- |\n")
	for _, size := range t.Sizes {
		load, _ := t.Scalar("load_duration_s", size)
		all, ok := t.Scalar("size_duration_s", size)
		total := "unfinished"
		if ok {
			total = minutes(all)
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", SizeLabel(size), minutes(load), total)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ratios writes the table of ours ÷ the better kube-proxy mode at a size.
func (t *Table) ratios(b *strings.Builder, size int, ours string) {
	kps := []string{}
	for _, c := range t.Contenders {
		if !isOurs(c) && c != "kube-proxy-ipvs" {
			kps = append(kps, c)
		}
	}
	fmt.Fprintf(b, "## %s ÷ the better of kube-proxy's modes, %s Services\n\n", ours, SizeLabel(size))
	fmt.Fprintf(b, "| figure | %s | %s | ratio | target | met |\n|%s\n", ours, strings.Join(kps, " | "), strings.Repeat(" --- |", len(kps)+5))
	for _, f := range Figures {
		if f.Target == nil {
			continue
		}
		o := t.Cell(f, size, ours)
		var cells []string
		var others []Cell
		for _, c := range kps {
			cell := t.Cell(f, size, c)
			others = append(others, cell)
			cells = append(cells, show(cell, f.Unit))
		}
		ratio, r := "—", math.NaN()
		if !f.Target.Zero {
			ratio, r = ratioOf(o, others)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", f.Title, show(o, f.Unit), strings.Join(cells, " | "), ratio, f.Target.Text, met(f.Target, o, r))
	}
	b.WriteString("\n")
}

// ratioOf returns ours ÷ the better (smaller) of kube-proxy's cells, as text
// and as a number (NaN when it is only a bound).
func ratioOf(ours Cell, kps []Cell) (string, float64) {
	best, bestCapped := math.Inf(1), math.Inf(1)
	for _, c := range kps {
		switch c.Status {
		case "ok":
			best = math.Min(best, c.Value)
		case "over_cap":
			bestCapped = math.Min(bestCapped, c.Value)
		}
	}
	switch {
	case ours.Status == "ok" && !math.IsInf(best, 1) && best > 0:
		r := ours.Value / best
		return fmt.Sprintf("%.2f", r), r
	case ours.Status == "ok" && !math.IsInf(bestCapped, 1):
		return fmt.Sprintf("< %.3f (both over the cap)", ours.Value/bestCapped), ours.Value / bestCapped
	case ours.Status == "over_cap" && !math.IsInf(best, 1) && best > 0:
		return fmt.Sprintf("> %.1f (ours over the cap)", ours.Value/best), math.NaN()
	}
	return "n/a", math.NaN()
}

// met says whether a target is met.
func met(tg *Target, ours Cell, ratio float64) string {
	if ours.Status != "ok" {
		return "no"
	}
	ok := true
	if tg.Zero {
		ok = ours.Value == 0
	}
	if tg.Ratio > 0 {
		ok = ok && !math.IsNaN(ratio) && ratio <= tg.Ratio
	}
	if tg.Below > 0 {
		ok = ok && ours.Value < tg.Below
	}
	if ok {
		return "**yes**"
	}
	return "no"
}

// figures writes every figure of every contender at a size.
func (t *Table) figures(b *strings.Builder, size int) {
	fmt.Fprintf(b, "## Every figure, %s Services\n\n| figure | %s |\n|%s\n", SizeLabel(size),
		strings.Join(t.Contenders, " | "), strings.Repeat(" --- |", len(t.Contenders)+1))
	for _, f := range Figures {
		var cells []string
		for _, c := range t.Contenders {
			cells = append(cells, show(t.Cell(f, size, c), f.Unit))
		}
		fmt.Fprintf(b, "| %s | %s |\n", f.Title, strings.Join(cells, " | "))
	}
	b.WriteString("\n")
}

// show prints a cell with its unit.
func show(c Cell, unit string) string {
	switch c.Status {
	case "ok":
		return format(c.Value) + " " + unit
	case "over_cap":
		return "over the cap (" + minutes(c.Value) + ")"
	case "missing":
		return "—"
	}
	return c.Status
}

func minutes(s float64) string {
	if s < 120 {
		return strconv.FormatFloat(s, 'f', 0, 64) + " s"
	}
	return fmt.Sprintf("%.0f min", s/60)
}

// loadRange is the range of the 1-minute load average over the run.
func (t *Table) loadRange() string {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range t.all {
		if v, err := strconv.ParseFloat(r.Load1, 64); err == nil {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if math.IsInf(lo, 1) {
		return "unknown"
	}
	return fmt.Sprintf("%.1f–%.1f", lo, hi)
}

// skipped lists the contenders the machine could not run, with the reason.
func (t *Table) skipped() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range t.all {
		if r.Figure == "contender" && r.Status == "skipped" && !seen[r.Contender] {
			seen[r.Contender] = true
			out = append(out, fmt.Sprintf("%s not measured: %s", r.Contender, r.Note))
		}
	}
	return out
}
