package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Builder turns the stages of a Plan into images: the Go binaries are
// built with the host's Go toolchain and the Debian bases with mmdebstrap.
type Builder struct {
	Root    string // the repository: the build context, and where go build runs
	Plan    *Plan
	Rootfs  *RootfsCache
	Arch    string    // GOARCH and Debian architecture
	Created time.Time // image creation time and mtime of the files it adds
	Work    string    // scratch directory for binaries
	Log     func(format string, args ...any)

	binMu    sync.Mutex
	bins     map[string]string // go build output -> file
	rootfsMu sync.Mutex
	rootfss  map[string]*rootfsOnce // stage -> root file system
}

// Image builds the image of one stage: its Debian root file system (if
// any), one layer per COPY, and the config the Dockerfile gives it.
func (b *Builder) Image(ctx context.Context, stage string) (v1.Image, error) {
	spec, ok := b.Plan.Images[stage]
	if !ok {
		return nil, fmt.Errorf("no image stage %q", stage)
	}
	var adds []mutate.Addendum
	have := func(string) bool { return false }
	if spec.Debian != nil {
		r, err := b.rootfs(ctx, stage)
		if err != nil {
			return nil, err
		}
		l, err := tarball.LayerFromFile(r.Layer, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		by := fmt.Sprintf("mmdebstrap --variant=minbase %s (as %s) --include=%s", spec.Debian.Suite, spec.Debian.Image, strings.Join(spec.Debian.Packages, ","))
		adds = append(adds, b.addendum(l, by))
		have = func(d string) bool { return r.Dirs[d] }
	}
	for _, c := range spec.Copies {
		entries, err := b.copyEntries(ctx, c)
		if err != nil {
			return nil, err
		}
		data, err := writeLayer(withParents(entries, have), b.Created)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", c.Line, err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
			tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		adds = append(adds, b.addendum(l, c.Text))
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(img, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", b.Arch
	cf.Created = v1.Time{Time: b.Created}
	cf.Config = *spec.Config.DeepCopy()
	return mutate.ConfigFile(img, cf)
}

func (b *Builder) addendum(l v1.Layer, createdBy string) mutate.Addendum {
	return mutate.Addendum{Layer: l, MediaType: types.OCILayer, History: v1.History{
		Created: v1.Time{Time: b.Created}, CreatedBy: createdBy, Comment: "hack/image",
	}}
}

type rootfsOnce struct {
	once sync.Once
	r    *DebianRootfs
	err  error
}

// rootfs returns the Debian root file system of a stage, built once; the
// root file systems of different stages build side by side.
func (b *Builder) rootfs(ctx context.Context, stage string) (*DebianRootfs, error) {
	b.rootfsMu.Lock()
	if b.rootfss == nil {
		b.rootfss = map[string]*rootfsOnce{}
	}
	o, ok := b.rootfss[stage]
	if !ok {
		o = &rootfsOnce{}
		b.rootfss[stage] = o
	}
	b.rootfsMu.Unlock()
	o.once.Do(func() {
		o.r, o.err = b.Rootfs.Get(ctx, *b.Plan.Images[stage].Debian, b.Arch)
		if o.err != nil {
			o.err = fmt.Errorf("stage %s: %w", stage, o.err)
		}
	})
	return o.r, o.err
}

// copyEntries reads the files of one COPY from the build context, the Go
// build stage or a Debian stage's root file system.
func (b *Builder) copyEntries(ctx context.Context, c Copy) ([]layerEntry, error) {
	if !path.IsAbs(c.Dest) {
		return nil, fmt.Errorf("line %d: COPY destination %s must be absolute", c.Line, c.Dest)
	}
	target := func(src string) string {
		d := c.Dest
		if strings.HasSuffix(d, "/") {
			d = path.Join(d, path.Base(src))
		}
		return strings.TrimPrefix(path.Clean(d), "/")
	}
	var out []layerEntry
	for _, src := range c.Sources {
		var es []layerEntry
		var err error
		switch spec := b.Plan.Images[c.From]; {
		case c.From == "":
			es, err = contextEntries(b.Root, src, c.Dest)
		case c.From == b.Plan.Build.Name:
			var data []byte
			if data, err = b.binary(ctx, src); err == nil {
				es = []layerEntry{{Name: target(src), Mode: 0o755, Data: data}}
			}
		case spec != nil && spec.Debian != nil:
			es, err = b.rootfsEntry(ctx, c.From, src, target(src))
		default:
			err = fmt.Errorf("cannot copy from stage %q", c.From)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", c.Line, err)
		}
		out = append(out, es...)
	}
	return out, nil
}

func (b *Builder) rootfsEntry(ctx context.Context, stage, src, dst string) ([]layerEntry, error) {
	r, err := b.rootfs(ctx, stage)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(r.Layer)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, mode, err := readLayerFile(f, strings.TrimPrefix(path.Clean(src), "/"))
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", stage, err)
	}
	return []layerEntry{{Name: dst, Mode: mode, Data: data}}, nil
}

// contextEntries reads a file or a directory tree of the build context
// into dest: a file lands at dest, or in it when dest ends in "/"; a
// directory's content lands in dest, as COPY does. File modes are 0755 when
// any execute bit is set, else 0644, whatever the checkout's umask.
func contextEntries(root, src, dest string) ([]layerEntry, error) {
	full := filepath.Join(root, filepath.FromSlash(path.Clean("/"+src)))
	dst := strings.TrimPrefix(path.Clean(dest), "/")
	fi, err := os.Stat(full)
	if err != nil {
		return nil, err
	}
	mode := func(m fs.FileMode) int64 {
		if m&0o111 != 0 {
			return 0o755
		}
		return 0o644
	}
	if !fi.IsDir() {
		if strings.HasSuffix(dest, "/") {
			dst = path.Join(dst, path.Base(src))
		}
		data, err := os.ReadFile(full)
		return []layerEntry{{Name: dst, Mode: mode(fi.Mode()), Data: data}}, err
	}
	var out []layerEntry
	err = filepath.WalkDir(full, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == full {
			return err
		}
		rel, _ := filepath.Rel(full, p)
		name := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		switch {
		case err != nil:
			return err
		case d.IsDir():
			out = append(out, layerEntry{Name: name, Mode: 0o755, Dir: true})
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			out = append(out, layerEntry{Name: name, Mode: mode(info.Mode()), Data: data})
			return err
		default:
			return fmt.Errorf("%s: only files and directories can be copied", p)
		}
		return nil
	})
	return out, err
}

// binary builds the Go binary the build stage writes to out, with the
// stage's environment and flags, and returns its content.
func (b *Builder) binary(ctx context.Context, out string) ([]byte, error) {
	b.binMu.Lock()
	defer b.binMu.Unlock()
	if f, ok := b.bins[out]; ok {
		return os.ReadFile(f)
	}
	g := b.Plan.Build.Binaries[out]
	f := filepath.Join(b.Work, "bin", path.Base(out))
	args := append(append([]string{"build"}, g.Flags...), "-o", f, g.Package)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = b.Root
	cmd.Env = append(append(os.Environ(), "GOOS=linux", "GOARCH="+b.Arch), g.Env...)
	start := time.Now()
	if o, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s go %s: %w\n%s", strings.Join(g.Env, " "), strings.Join(args, " "), err, o)
	}
	b.Log("Built %s in %s: %s go %s", g.Package, time.Since(start).Round(time.Millisecond), strings.Join(g.Env, " "), strings.Join(args, " "))
	if b.bins == nil {
		b.bins = map[string]string{}
	}
	b.bins[out] = f
	return os.ReadFile(f)
}
