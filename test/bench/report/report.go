// Package report turns the CSV of a bench-compare run into one PNG plot per
// figure (contenders side by side, sizes on the x axis) and a Markdown
// summary with the ratios ours ÷ the better of kube-proxy's modes, all from
// the same run. It reads only the CSV, so a run's plots can be drawn again
// without measuring again: go run ./test/bench/cmd/bench-report.
package report

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Row is one raw figure of the CSV.
type Row struct {
	Size      int
	Contender string
	Rep       int
	Figure    string
	Sample    int
	Value     float64
	Unit      string
	Status    string
	Note      string
	Load1     string
}

// Meta is what the CSV says of the machine and the commit.
type Meta struct {
	Run, Commit, Cores, CPU, Memory, Kernel, IPTables, NFT string
}

// Load reads the CSV that package bench writes.
func Load(path string) ([]Row, Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Meta{}, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	head, err := r.Read()
	if err != nil {
		return nil, Meta{}, fmt.Errorf("%s: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[h] = i
	}
	for _, want := range []string{"run", "commit", "size", "contender", "rep", "figure", "sample", "value", "status"} {
		if _, ok := col[want]; !ok {
			return nil, Meta{}, fmt.Errorf("%s: no column %q", path, want)
		}
	}
	var rows []Row
	var meta Meta
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, Meta{}, fmt.Errorf("%s: %w", path, err)
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(rec) {
				return rec[i]
			}
			return ""
		}
		meta = Meta{get("run"), get("commit"), get("cores"), get("cpu"), get("memory"), get("kernel"), get("iptables"), get("nft")}
		row := Row{Contender: get("contender"), Figure: get("figure"), Unit: get("unit"), Status: get("status"),
			Note: get("note"), Load1: get("load1")}
		row.Size, _ = strconv.Atoi(get("size"))
		row.Rep, _ = strconv.Atoi(get("rep"))
		row.Sample, _ = strconv.Atoi(get("sample"))
		if row.Value, err = strconv.ParseFloat(get("value"), 64); err != nil {
			return nil, Meta{}, fmt.Errorf("%s: value %q: %w", path, get("value"), err)
		}
		rows = append(rows, row)
	}
	return rows, meta, nil
}

// Write reads the CSV at csvPath and writes the plots and summary.md to dir.
func Write(csvPath, dir string) error {
	rows, meta, err := Load(csvPath)
	if err != nil {
		return err
	}
	t := Tabulate(rows)
	for _, f := range Figures {
		if err := Plot(t, f, filepath.Join(dir, f.Key+".png")); err != nil {
			return fmt.Errorf("plot %s: %w", f.Key, err)
		}
	}
	out, err := os.Create(filepath.Join(dir, "summary.md"))
	if err != nil {
		return err
	}
	if err := Summary(out, t, meta); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Quantile returns the q-quantile of v by the nearest-rank method (q=0.5 the
// median, q=1 the largest), or NaN for no values.
func Quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(v))
	k := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(k, len(s)-1))]
}

// median is the median of v, the mean of the two middle values for an even
// count.
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// SizeLabel names a size: 1000 is "1k".
func SizeLabel(n int) string {
	if n%1000 == 0 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// isOurs tells our contenders from kube-proxy's by name.
func isOurs(contender string) bool { return strings.HasPrefix(contender, "synterix-") }
