package report

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run's CSV as package bench writes it: at 10k, kube-proxy iptables over
// the cap, kube-proxy nftables and ours measured, in two repetitions.
const sampleCSV = `run,commit,cores,cpu,memory,kernel,iptables,nft,size,contender,rep,figure,sample,value,unit,status,load1,load5,load15,note
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,kube-proxy-ipvs,0,contender,0,0,,skipped,1,1,1,no IPVS
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,kube-proxy-iptables,1,cold_start_full_sync_s,0,600,s,over_cap,3.5,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,kube-proxy-nftables,1,cold_start_full_sync_s,0,20,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,kube-proxy-nftables,2,cold_start_full_sync_s,0,30,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,synterix-iptables,1,cold_start_full_sync_s,0,4,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,synterix-iptables,2,cold_start_full_sync_s,0,6,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,synterix-iptables,1,latency_alone_s,1,0.1,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,synterix-iptables,1,latency_alone_s,2,0.3,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,synterix-iptables,2,latency_alone_s,1,0.2,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,kube-proxy-nftables,1,latency_alone_s,1,0.4,s,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,synterix-iptables,1,peak_rss_mib,0,100,MiB,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,synterix-iptables,1,restart_peak_rss_mib,0,150,MiB,ok,2,1,1,
r,c,2,cpu,1 MiB,6.1,ipt,nft,10000,,0,size_duration_s,0,3600,s,ok,2,1,1,
`

func sampleTable(t *testing.T) (*Table, Meta, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "results.csv")
	if err := os.WriteFile(path, []byte(sampleCSV), 0o600); err != nil {
		t.Fatal(err)
	}
	rows, meta, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return Tabulate(rows), meta, dir
}

func figure(t *testing.T, key string) Figure {
	t.Helper()
	for _, f := range Figures {
		if f.Key == key {
			return f
		}
	}
	t.Fatalf("no figure %s", key)
	return Figure{}
}

func TestCells(t *testing.T) {
	tb, _, _ := sampleTable(t)
	if len(tb.Sizes) != 1 || tb.Sizes[0] != 10000 {
		t.Errorf("sizes %v, want [10000]", tb.Sizes)
	}
	if want := []string{"kube-proxy-iptables", "kube-proxy-nftables", "synterix-iptables"}; strings.Join(tb.Contenders, ",") != strings.Join(want, ",") {
		t.Errorf("contenders %v, want %v (a skipped contender is not one)", tb.Contenders, want)
	}
	cold := figure(t, "cold_start_full_sync")
	if c := tb.Cell(cold, 10000, "kube-proxy-iptables"); c.Status != "over_cap" || c.Value != 600 {
		t.Errorf("kube-proxy-iptables cold start %+v, want over the cap at 600", c)
	}
	if c := tb.Cell(cold, 10000, "synterix-iptables"); c.Status != "ok" || c.Value != 5 || c.N != 2 {
		t.Errorf("ours %+v, want the median 5 of two repetitions", c)
	}
	// A series pools the samples of every repetition: 0.1, 0.2, 0.3.
	if c := tb.Cell(figure(t, "latency_alone_p50"), 10000, "synterix-iptables"); c.Value != 0.2 || c.N != 3 {
		t.Errorf("latency p50 %+v, want 0.2 over 3 samples", c)
	}
	if c := tb.Cell(figure(t, "latency_alone_max"), 10000, "synterix-iptables"); c.Value != 0.3 {
		t.Errorf("latency max %+v, want 0.3", c)
	}
	// Peak RSS is the larger of the first and the restarted process.
	if c := tb.Cell(figure(t, "peak_rss"), 10000, "synterix-iptables"); c.Value != 150 {
		t.Errorf("peak RSS %+v, want 150", c)
	}
	if c := tb.Cell(figure(t, "idle_cpu"), 10000, "synterix-iptables"); c.Status != "missing" {
		t.Errorf("idle CPU %+v, want missing", c)
	}
}

func TestRatioTakesTheBetterKubeProxyMode(t *testing.T) {
	ours := Cell{Status: "ok", Value: 5}
	text, r := ratioOf(ours, []Cell{{Status: "over_cap", Value: 600}, {Status: "ok", Value: 25}})
	if r != 0.2 || text != "0.20" {
		t.Errorf("ratio %q %v, want 0.20 against the mode that finished", text, r)
	}
	text, r = ratioOf(ours, []Cell{{Status: "over_cap", Value: 600}, {Status: "over_cap", Value: 600}})
	if !strings.HasPrefix(text, "< ") || math.Abs(r-5.0/600) > 1e-12 {
		t.Errorf("ratio %q %v, want a bound when both modes are over the cap", text, r)
	}
	text, r = ratioOf(Cell{Status: "over_cap", Value: 600}, []Cell{{Status: "ok", Value: 60}})
	if !strings.HasPrefix(text, "> ") || !math.IsNaN(r) {
		t.Errorf("ratio %q %v, want a lower bound when ours is over the cap", text, r)
	}
	if got := met(&Target{Ratio: 0.5, Below: 0.5}, Cell{Status: "ok", Value: 0.6}, 0.2); got != "no" {
		t.Errorf("a p99 of 0.6 s met a target of < 0.5 s: %s", got)
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ q, want float64 }{{0.5, 3}, {0.99, 5}, {1, 5}, {0.2, 1}} {
		if got := Quantile(v, c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if !math.IsNaN(Quantile(nil, 0.5)) {
		t.Error("the quantile of nothing is a number")
	}
}

func TestWrite(t *testing.T) {
	_, _, dir := sampleTable(t)
	if err := Write(filepath.Join(dir, "results.csv"), dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range Figures {
		st, err := os.Stat(filepath.Join(dir, f.Key+".png"))
		if err != nil || st.Size() < 1000 {
			t.Errorf("%s.png: %v", f.Key, err)
		}
	}
	sum, err := os.ReadFile(filepath.Join(dir, "summary.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kube-proxy-ipvs not measured: no IPVS", "| Cold start: process start to full sync in the kernel | 5 s | over the cap (10 min) | 25 s | 0.20 | ≤ 0.2× | **yes** |", "| 10k | 0 s | 60 min |"} {
		if !strings.Contains(string(sum), want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
}
