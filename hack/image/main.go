// Command image builds the container images of synterix-kube-proxy without
// a Docker engine, as OCI archives: the manager and the agent from the
// Dockerfile's stages of those names, and the test images pause and echo.
//
//	go run ./hack/image -build-arg VERSION=v1 -out bin/images [target...]
//
// It reads the Dockerfile and does what it says with local tools: go build
// with the Dockerfile's commands and flags, mmdebstrap for the Debian bases
// with the Dockerfile's packages, go-containerregistry for the layers, the
// config and the archive. See README.md in this directory.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// Default image names; the agent's is the manager's with "-agent".
const (
	defaultManagerRepo = "ghcr.io/synterix/synterix-kube-proxy"
	defaultTestTag     = "test"
)

// AllTargets are the images built when no target is named.
var AllTargets = []string{"manager", "agent", "pause", "echo"}

type options struct {
	root, dockerfile, out, cache, arch string
	maxAge                             time.Duration
	refresh                            bool
	buildArgs, images                  map[string]string
	created                            time.Time
	targets                            []string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o, err := parseFlags(os.Args[1:])
	if err == nil {
		err = build(ctx, o, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{buildArgs: map[string]string{}, images: map[string]string{}}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.root, "root", ".", "Repository root: the build context.")
	fs.StringVar(&o.dockerfile, "dockerfile", "Dockerfile", "Dockerfile, relative to -root.")
	fs.StringVar(&o.out, "out", "bin/images", "Directory of the OCI archives <target>.tar and images.json.")
	fs.StringVar(&o.cache, "cache", filepath.Join(cache, "synterix-kube-proxy", "images"), "Cache of Debian root file systems.")
	fs.StringVar(&o.arch, "arch", runtime.GOARCH, "Architecture (GOARCH, and Debian's of the same name).")
	fs.DurationVar(&o.maxAge, "rootfs-max-age", 7*24*time.Hour, "Build a cached Debian root file system again when older, for security updates.")
	fs.BoolVar(&o.refresh, "refresh", false, "Build the Debian root file systems again.")
	fs.Func("build-arg", "NAME=VALUE for an ARG of the Dockerfile (repeat), e.g. VERSION=v1.", keyValue(o.buildArgs))
	fs.Func("image", "TARGET=NAME:TAG names an image (repeat); default: manager "+defaultManagerRepo+":$VERSION, agent the manager's name with -agent, pause and echo localhost/synterix/<target>:"+defaultTestTag+".", keyValue(o.images))
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	epoch := int64(0)
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if epoch, err = strconv.ParseInt(s, 10, 64); err != nil {
			return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", s, err)
		}
	}
	o.created = time.Unix(epoch, 0).UTC()
	for t := range o.images {
		if !slices.Contains(AllTargets, t) {
			return nil, fmt.Errorf("-image %s=...: no such target (known: %s)", t, strings.Join(AllTargets, ", "))
		}
	}
	o.targets = fs.Args()
	if len(o.targets) == 0 {
		o.targets = AllTargets
	}
	return o, o.defaultNames()
}

func keyValue(m map[string]string) func(string) error {
	return func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("want NAME=VALUE, got %q", s)
		}
		m[k] = v
		return nil
	}
}

// defaultNames fills in the image names and the build arguments VERSION
// and AGENT_IMAGE, so that the manager's default agent image is the agent
// image built with it.
func (o *options) defaultNames() error {
	if o.buildArgs["VERSION"] == "" {
		o.buildArgs["VERSION"] = "dev"
	}
	if o.images["manager"] == "" {
		o.images["manager"] = defaultManagerRepo + ":" + o.buildArgs["VERSION"]
	}
	if o.images["agent"] == "" {
		a, err := AgentRef(o.images["manager"])
		if err != nil {
			return err
		}
		o.images["agent"] = a
	}
	for _, t := range testImages {
		if o.images[t.name] == "" {
			o.images[t.name] = "localhost/synterix/" + t.name + ":" + defaultTestTag
		}
	}
	if _, ok := o.buildArgs["AGENT_IMAGE"]; !ok {
		o.buildArgs["AGENT_IMAGE"] = o.images["agent"]
	}
	return nil
}

// AgentRef derives the agent image from the manager's: the repository
// gains "-agent", the tag stays (a digest does not carry over).
func AgentRef(manager string) (string, error) {
	ref, _, _ := strings.Cut(manager, "@")
	i := strings.LastIndexByte(ref, ':')
	if i <= strings.LastIndexByte(ref, '/') {
		return "", fmt.Errorf("manager image %q has no tag", manager)
	}
	return ref[:i] + "-agent" + ref[i:], nil
}

// build makes the images of o.targets and writes their archives.
func build(ctx context.Context, o *options, log func(string, ...any)) error {
	start := time.Now()
	plan, err := LoadPlan(filepath.Join(o.root, o.dockerfile), o.buildArgs)
	if err != nil {
		return err
	}
	if err := addTestImages(plan, o.buildArgs["VERSION"]); err != nil {
		return err
	}
	checkGoVersion(plan.Build.Image, log)
	for _, t := range o.targets {
		if _, ok := plan.Images[t]; !ok || o.images[t] == "" {
			return fmt.Errorf("unknown target %q (known: %s)", t, strings.Join(AllTargets, ", "))
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "synterix-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	b := &Builder{Root: o.root, Plan: plan, Arch: o.arch, Created: o.created, Work: work, Log: log,
		Rootfs: &RootfsCache{Dir: o.cache, MaxAge: o.maxAge, Refresh: o.refresh, Log: log}}
	if err := b.Prepare(ctx, o.targets); err != nil {
		return err
	}
	var written []ArchiveInfo
	for _, t := range o.targets {
		img, err := b.Image(ctx, t)
		if err != nil {
			return fmt.Errorf("image %s: %w", t, err)
		}
		dst := filepath.Join(o.out, t+".tar")
		d, err := WriteArchive(img, o.images[t], dst, o.created)
		if err != nil {
			return fmt.Errorf("image %s: %w", t, err)
		}
		fi, err := os.Stat(dst)
		if err != nil {
			return err
		}
		full, _, _ := fullRef(o.images[t])
		abs, _ := filepath.Abs(dst)
		written = append(written, ArchiveInfo{Target: t, Image: full, Archive: abs, Digest: d.String(), Size: fi.Size()})
		log("Wrote %s: %s %s (%.1f MB)", dst, full, d, float64(fi.Size())/1e6)
	}
	log("Built %d images in %s", len(written), time.Since(start).Round(100*time.Millisecond))
	return updateIndex(filepath.Join(o.out, "images.json"), written)
}

// LoadPlan parses the Dockerfile and interprets it with buildArgs.
func LoadPlan(dockerfile string, buildArgs map[string]string) (*Plan, error) {
	f, err := os.Open(dockerfile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := ParseDockerfile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dockerfile, err)
	}
	p, err := NewPlan(d, buildArgs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dockerfile, err)
	}
	return p, nil
}

// Prepare builds what the targets need, each Debian root file system and
// the Go binaries side by side: the first wait much for the network, the
// second for the CPUs.
func (b *Builder) Prepare(ctx context.Context, targets []string) error {
	stages, bins := map[string]bool{}, map[string]bool{}
	for _, t := range targets {
		spec := b.Plan.Images[t]
		if spec.Debian != nil {
			stages[t] = true
		}
		for _, c := range spec.Copies {
			switch from := b.Plan.Images[c.From]; {
			case c.From == b.Plan.Build.Name:
				for _, s := range c.Sources {
					bins[s] = true
				}
			case from != nil && from.Debian != nil:
				stages[c.From] = true
			}
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for _, s := range sortedKeys(stages) {
		g.Go(func() error { _, err := b.rootfs(ctx, s); return err })
	}
	g.Go(func() error {
		for _, out := range sortedKeys(bins) {
			if _, err := b.binary(ctx, out); err != nil {
				return err
			}
		}
		return nil
	})
	return g.Wait()
}

// ArchiveInfo is an entry of images.json, which tells the cluster harness
// what to import.
type ArchiveInfo struct {
	Target  string `json:"target"`
	Image   string `json:"image"`
	Archive string `json:"archive"`
	Digest  string `json:"digest"`
	Size    int64  `json:"size"`
}

// updateIndex merges the archives just written into images.json.
func updateIndex(p string, written []ArchiveInfo) error {
	var all []ArchiveInfo
	if b, err := os.ReadFile(p); err == nil {
		if err := json.Unmarshal(b, &all); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	byTarget := map[string]ArchiveInfo{}
	for _, a := range append(all, written...) {
		byTarget[a.Target] = a
	}
	all = all[:0]
	for _, a := range byTarget {
		all = append(all, a)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Target < all[j].Target })
	return writeJSON(p, all)
}

// checkGoVersion warns when the host's Go is not the Go of the
// Dockerfile's golang image: the local binaries would not be the same.
func checkGoVersion(image string, log func(string, ...any)) {
	ref, _, _ := strings.Cut(image, "@")
	want, _, _ := strings.Cut(ref[strings.LastIndexByte(ref, ':')+1:], "-")
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	have := strings.TrimPrefix(strings.TrimSpace(string(out)), "go")
	if err != nil || (have != want && !strings.HasPrefix(have, want+".")) {
		log("Warning: the host's Go is %q, the Dockerfile builds with %s (Go %s): the binaries differ", have, image, want)
	}
}
