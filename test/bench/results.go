package bench

import (
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Status of a figure.
const (
	StatusOK      = "ok"
	StatusOverCap = "over_cap" // the phase did not finish within the cap
	StatusSkipped = "skipped"  // not measured; the note says why
	StatusFailed  = "failed"   // the phase failed; the note says why
)

// Record is one raw figure: one row of the CSV.
type Record struct {
	Size      int
	Contender string
	Rep       int
	Figure    string
	Sample    int // 0 for a single value, 1… for the samples of a series
	Value     float64
	Unit      string
	Status    string
	Load      [3]string // load average when the figure was taken
	Note      string
}

// Machine describes where a run took place.
type Machine struct {
	Run, Commit                        string
	Cores                              int
	CPU, Kernel, IPTables, NFT, Memory string
}

// Columns of the CSV.
var Columns = []string{"run", "commit", "cores", "cpu", "memory", "kernel", "iptables", "nft",
	"size", "contender", "rep", "figure", "sample", "value", "unit", "status", "load1", "load5", "load15", "note"}

// DescribeMachine reads the machine's cores, CPU, memory, kernel, iptables
// and nft versions, and the commit of the repository at root.
func DescribeMachine(root string) Machine {
	m := Machine{Run: time.Now().UTC().Format(time.RFC3339), Cores: runtime.NumCPU()}
	m.Commit = cmdOut(root, "git", "rev-parse", "--short=12", "HEAD")
	if cmdOut(root, "git", "status", "--porcelain", "--untracked-files=no") != "" {
		m.Commit += "-dirty"
	}
	m.Kernel = strings.TrimSpace(readFile("/proc/sys/kernel/osrelease"))
	m.IPTables = cmdOut("", "iptables", "--version")
	m.NFT = cmdOut("", "nft", "--version")
	for _, l := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			m.CPU = strings.TrimSpace(v)
			break
		}
	}
	for _, l := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if strings.HasPrefix(l, "MemTotal:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			m.Memory = fmt.Sprintf("%d MiB", kb/1024)
		}
	}
	return m
}

func cmdOut(dir, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// LoadAvg returns the 1, 5 and 15 minute load averages.
func LoadAvg() [3]string {
	var l [3]string
	f := strings.Fields(readFile("/proc/loadavg"))
	copy(l[:], f)
	return l
}

// Recorder collects the records of a run and writes them as CSV.
type Recorder struct {
	mu      sync.Mutex
	machine Machine
	path    string
	records []Record
}

// NewRecorder returns a recorder that writes to path.
func NewRecorder(m Machine, path string) *Recorder { return &Recorder{machine: m, path: path} }

// Add stamps r with the load average and keeps it.
func (r *Recorder) Add(rec Record) {
	rec.Load = LoadAvg()
	if rec.Status == "" {
		rec.Status = StatusOK
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
}

// Records returns a copy of what was recorded so far.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.records...)
}

// Flush writes every record so far to the CSV (the whole file, through a
// temporary file, so that an interrupted run keeps what it measured).
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	tmp := r.path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write(Columns)
	m := r.machine
	for _, rec := range r.records {
		_ = w.Write([]string{m.Run, m.Commit, strconv.Itoa(m.Cores), m.CPU, m.Memory, m.Kernel, m.IPTables, m.NFT,
			strconv.Itoa(rec.Size), rec.Contender, strconv.Itoa(rec.Rep), rec.Figure, strconv.Itoa(rec.Sample),
			strconv.FormatFloat(rec.Value, 'g', 6, 64), rec.Unit, rec.Status, rec.Load[0], rec.Load[1], rec.Load[2], rec.Note})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, r.path)
}
