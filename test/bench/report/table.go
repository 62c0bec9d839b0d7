package report

import (
	"math"
	"slices"
)

// Figure is one figure of the summary and one plot.
type Figure struct {
	// Key names the plot file (<Key>.png).
	Key   string
	Title string
	Unit  string
	// Sources are the CSV figures it is made of. A single value per
	// repetition (Q == 0) is the largest of the sources in that repetition,
	// and the figure is the median over the repetitions.
	Sources []string
	// Q > 0 makes it a series: the Q-quantile of every sample of every
	// repetition.
	Q float64
	// Target is the target for ours ÷ the better kube-proxy mode;
	// nil when there is none.
	Target *Target
}

// Target is a goal for our contenders.
type Target struct {
	// Ratio: ours ÷ the better kube-proxy mode at most this (0: none).
	Ratio float64
	// Below: ours strictly below this, in the figure's unit (0: none).
	Below float64
	// Zero: ours exactly 0.
	Zero bool
	// Text is how the summary states it.
	Text string
}

// Figures are the figures of the summary, in order; each gets a plot.
var Figures = []Figure{
	{Key: "cold_start_full_sync", Title: "Cold start: process start to full sync in the kernel", Unit: "s",
		Sources: []string{"cold_start_full_sync_s"}, Target: &Target{Ratio: 0.2, Text: "≤ 0.2×"}},
	{Key: "cold_start_first_packet", Title: "Cold start: process start to first packet served", Unit: "s",
		Sources: []string{"cold_start_first_packet_s"}},
	{Key: "cold_start_cpu", Title: "Cold start: CPU seconds until the contender reports its first sync", Unit: "CPU s",
		Sources: []string{"cold_start_cpu_s"}},
	{Key: "latency_alone_p50", Title: "Endpoint change to traffic, alone: p50", Unit: "s",
		Sources: []string{"latency_alone_s"}, Q: 0.5, Target: &Target{Ratio: 0.5, Text: "≤ 0.5×"}},
	{Key: "latency_alone_p99", Title: "Endpoint change to traffic, alone: p99", Unit: "s",
		Sources: []string{"latency_alone_s"}, Q: 0.99, Target: &Target{Ratio: 0.5, Below: 0.5, Text: "≤ 0.5× and < 0.5 s"}},
	{Key: "latency_alone_max", Title: "Endpoint change to traffic, alone: max", Unit: "s",
		Sources: []string{"latency_alone_s"}, Q: 1},
	{Key: "latency_churn_p50", Title: "Endpoint change to traffic, under churn: p50", Unit: "s",
		Sources: []string{"latency_churn_s"}, Q: 0.5, Target: &Target{Ratio: 0.5, Text: "≤ 0.5×"}},
	{Key: "latency_churn_p99", Title: "Endpoint change to traffic, under churn: p99", Unit: "s",
		Sources: []string{"latency_churn_s"}, Q: 0.99, Target: &Target{Ratio: 0.5, Below: 0.5, Text: "≤ 0.5× and < 0.5 s"}},
	{Key: "latency_churn_max", Title: "Endpoint change to traffic, under churn: max", Unit: "s",
		Sources: []string{"latency_churn_s"}, Q: 1},
	{Key: "restart_change", Title: "Restart (kill -9): a change written at once takes effect after", Unit: "s",
		Sources: []string{"restart_change_s"}, Target: &Target{Ratio: 0.1, Text: "≤ 0.1×"}},
	{Key: "restart_failed_connections", Title: "Restart (kill -9): failed probe connections", Unit: "connections",
		Sources: []string{"restart_failed_connections"}, Target: &Target{Zero: true, Text: "0"}},
	{Key: "peak_rss", Title: "Peak RSS (the larger of the first and the restarted process)", Unit: "MiB",
		Sources: []string{"peak_rss_mib", "restart_peak_rss_mib"}, Target: &Target{Ratio: 0.6, Text: "≤ 0.6×"}},
	{Key: "idle_cpu", Title: "Idle: CPU seconds over the idle window", Unit: "CPU s", Sources: []string{"idle_cpu_s"}},
	{Key: "idle_api_requests", Title: "Idle: API requests over the idle window", Unit: "requests", Sources: []string{"idle_api_requests"}},
	{Key: "api_requests", Title: "API requests over the whole run (both processes)", Unit: "requests", Sources: []string{"api_requests_total"}},
	{Key: "api_received", Title: "Bytes received from the API server over the run", Unit: "MiB", Sources: []string{"api_received_mib"}},
	{Key: "first_packet_first", Title: "First packet (TCP handshake) to the first Service: median", Unit: "µs",
		Sources: []string{"first_packet_first_us"}, Q: 0.5},
	{Key: "first_packet_last", Title: "First packet (TCP handshake) to the last Service: median", Unit: "µs",
		Sources: []string{"first_packet_last_us"}, Q: 0.5},
}

// Cell is one figure of one contender at one size.
type Cell struct {
	Value  float64
	Status string // ok, over_cap, skipped, failed or missing
	N      int    // repetitions or samples behind Value
	Note   string
}

type rowKey struct {
	figure    string
	size      int
	contender string
}

// Table holds a run's rows, grouped.
type Table struct {
	Sizes      []int
	Contenders []string
	rows       map[rowKey][]Row
	all        []Row
}

// Tabulate groups the rows of a run by figure, size and contender.
func Tabulate(rows []Row) *Table {
	t := &Table{rows: map[rowKey][]Row{}, all: rows}
	for _, r := range rows {
		t.rows[rowKey{r.Figure, r.Size, r.Contender}] = append(t.rows[rowKey{r.Figure, r.Size, r.Contender}], r)
		if r.Size > 0 && r.Figure != "contender" && !slices.Contains(t.Sizes, r.Size) {
			t.Sizes = append(t.Sizes, r.Size)
		}
		if r.Contender != "" && r.Figure != "contender" && !slices.Contains(t.Contenders, r.Contender) {
			t.Contenders = append(t.Contenders, r.Contender)
		}
	}
	slices.Sort(t.Sizes)
	return t
}

// Cell computes figure f for a contender at a size.
func (t *Table) Cell(f Figure, size int, contender string) Cell {
	var rows []Row
	for _, s := range f.Sources {
		rows = append(rows, t.rows[rowKey{s, size, contender}]...)
	}
	if len(rows) == 0 {
		return Cell{Status: "missing", Value: math.NaN()}
	}
	for _, r := range rows {
		if r.Status == "over_cap" {
			return Cell{Status: "over_cap", Value: r.Value, Note: r.Note}
		}
	}
	if f.Q > 0 {
		var v []float64
		for _, r := range rows {
			if r.Sample > 0 && r.Status == "ok" {
				v = append(v, r.Value)
			}
		}
		if len(v) == 0 {
			return Cell{Status: rows[0].Status, Value: math.NaN(), Note: rows[0].Note}
		}
		return Cell{Status: "ok", Value: Quantile(v, f.Q), N: len(v)}
	}
	perRep := map[int]float64{}
	for _, r := range rows {
		if r.Status == "ok" && r.Sample == 0 {
			if cur, ok := perRep[r.Rep]; !ok || r.Value > cur {
				perRep[r.Rep] = r.Value
			}
		}
	}
	if len(perRep) == 0 {
		return Cell{Status: rows[0].Status, Value: math.NaN(), Note: rows[0].Note}
	}
	var v []float64
	for _, x := range perRep {
		v = append(v, x)
	}
	return Cell{Status: "ok", Value: median(v), N: len(v)}
}

// Scalar returns the median of a figure recorded once per size (no
// contender), such as the size's duration.
func (t *Table) Scalar(figure string, size int) (float64, bool) {
	rows := t.rows[rowKey{figure, size, ""}]
	if len(rows) == 0 {
		return 0, false
	}
	return rows[len(rows)-1].Value, true
}
