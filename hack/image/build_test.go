package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// tarEntry is what the tests see of a file in an image.
type tarEntry struct {
	Type     byte
	Mode     int64
	UID, GID int
	Size     int64
	Link     string
	Data     string // for small files
}

func readTar(t *testing.T, r io.Reader) map[string]tarEntry {
	t.Helper()
	out := map[string]tarEntry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		e := tarEntry{Type: h.Typeflag, Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid, Size: h.Size, Link: h.Linkname}
		if h.Size < 4096 {
			b, _ := io.ReadAll(tr)
			e.Data = string(b)
		}
		out[strings.TrimSuffix(h.Name, "/")] = e
	}
}

// fakeRootfs stores a FAKE Debian root file system in the cache, as if
// mmdebstrap had built it: a few directories and files. The builder's real
// Debian build needs the network and is tested by TestImagesRunInContainerd.
func fakeRootfs(t *testing.T, c *RootfsCache, b DebianBase, files map[string]string) {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, d := range []string{"./", "./etc/", "./etc/ssl/", "./etc/ssl/certs/", "./usr/", "./usr/sbin/", "./dev/"} {
		_ = tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	_ = tw.WriteHeader(&tar.Header{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3})
	for name, data := range files {
		_ = tw.WriteHeader(&tar.Header{Name: "./" + name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))})
		_, _ = tw.Write([]byte(data))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(c.Dir, c.key(b, runtime.GOARCH))
	if err := os.WriteFile(base+".raw", raw.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	dirs, err := compressRootfs(base+".raw", base+".tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(base+".json", rootfsMeta{Suite: b.Suite, Built: time.Now(), Dirs: sortedKeys(dirs), Packages: []string{"fake 1"}}); err != nil {
		t.Fatal(err)
	}
}

// testBuilder is a Builder on the real Dockerfile with a cache holding
// FAKE root file systems for its Debian stages.
func testBuilder(t *testing.T) *Builder {
	t.Helper()
	p := realPlan(t)
	cache := &RootfsCache{Dir: t.TempDir(), MaxAge: time.Hour, Log: t.Logf}
	fakeRootfs(t, cache, *p.Images["certs"].Debian, map[string]string{"etc/ssl/certs/ca-certificates.crt": "FAKE CA\n"})
	fakeRootfs(t, cache, *p.Images["agent"].Debian, map[string]string{"usr/sbin/iptables": "FAKE iptables\n"})
	root, _ := filepath.Abs(repoRoot)
	return &Builder{Root: root, Plan: p, Rootfs: cache, Arch: runtime.GOARCH, Created: time.Unix(1700000000, 0).UTC(), Work: t.TempDir(), Log: t.Logf}
}

func TestBuilderManagerImage(t *testing.T) {
	b := testBuilder(t)
	img, err := b.Image(context.Background(), "manager")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/manager"}) ||
		cf.OS != "linux" || cf.Architecture != runtime.GOARCH || !cf.Created.Time.Equal(b.Created) {
		t.Errorf("config: %+v", cf)
	}
	if cf.Config.Labels["org.opencontainers.image.version"] != driftArgs["VERSION"] {
		t.Errorf("labels: %v", cf.Config.Labels)
	}
	if layers, _ := img.Layers(); len(layers) != 3 || len(cf.History) != 3 {
		t.Errorf("%d layers, %d history entries; want one per COPY", len(layers), len(cf.History))
	}
	files := readTar(t, mutate.Extract(img))
	want := map[string]tarEntry{
		"etc":                               {Type: tar.TypeDir, Mode: 0o755},
		"etc/ssl":                           {Type: tar.TypeDir, Mode: 0o755},
		"etc/ssl/certs":                     {Type: tar.TypeDir, Mode: 0o755},
		"etc/ssl/certs/ca-certificates.crt": {Type: tar.TypeReg, Mode: 0o644, Size: 8, Data: "FAKE CA\n"},
	}
	for _, f := range []string{"passwd", "group"} {
		data, err := os.ReadFile(filepath.Join(b.Root, "hack/image/manager", f))
		if err != nil {
			t.Fatal(err)
		}
		want["etc/"+f] = tarEntry{Type: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), Data: string(data)}
	}
	bin := files["manager"]
	if bin.Type != tar.TypeReg || bin.Mode != 0o755 || bin.UID != 0 || bin.Size < 1<<20 {
		t.Errorf("/manager: %+v", bin)
	}
	delete(files, "manager")
	if !reflect.DeepEqual(files, want) {
		t.Errorf("manager image files:\n got %+v\nwant %+v", files, want)
	}
}

func TestBuilderAgentImage(t *testing.T) {
	b := testBuilder(t)
	img, err := b.Image(context.Background(), "agent")
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	if cf.Config.User != "0:0" || !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/agent"}) || cf.Config.Cmd != nil {
		t.Errorf("config: %+v", cf.Config)
	}
	layers, _ := img.Layers()
	if len(layers) != 2 {
		t.Fatalf("%d layers, want the Debian root and /agent", len(layers))
	}
	rc, _ := layers[0].Uncompressed()
	base := readTar(t, rc)
	rc.Close()
	if _, ok := base["usr/sbin/iptables"]; !ok {
		t.Errorf("root layer: %v", base)
	}
	if _, ok := base["dev/null"]; ok {
		t.Error("root layer keeps device nodes")
	}
	rc, _ = layers[1].Uncompressed()
	top := readTar(t, rc)
	rc.Close()
	if len(top) != 1 || top["agent"].Mode != 0o755 {
		t.Errorf("second layer: %v (want /agent alone: its parent is in the root layer)", top)
	}
}

// The same inputs give the same image, and the archive names it so that
// containerd's import and the OCI tools find it.
func TestBuilderArchiveIsReproducible(t *testing.T) {
	b := testBuilder(t)
	out := t.TempDir()
	var digests []v1.Hash
	for i := range 2 {
		img, err := b.Image(context.Background(), "pause")
		if err != nil {
			t.Fatal(err)
		}
		d, err := WriteArchive(img, "localhost/synterix/pause:test", filepath.Join(out, "pause.tar"), b.Created)
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
		if i == 0 {
			b.bins = nil // build the binary again
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds, two digests: %v", digests)
	}
	f, err := os.Open(filepath.Join(out, "pause.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	if err := untar(f, dir); err != nil {
		t.Fatal(err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != digests[0] ||
		m.Manifests[0].Annotations[annotationImageName] != "localhost/synterix/pause:test" ||
		m.Manifests[0].Annotations[annotationRefName] != "test" {
		t.Errorf("index: %+v", m.Manifests)
	}
	img, err := idx.Image(digests[0])
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	if cf.Config.User != "65535:65535" || !reflect.DeepEqual(cf.Config.Entrypoint, []string{"/pause"}) {
		t.Errorf("pause config: %+v", cf.Config)
	}
}

func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
}

func TestNormalizeRootfs(t *testing.T) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, h := range []*tar.Header{
		{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./dev/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./dev/null", Typeflag: tar.TypeChar, Mode: 0o666},
		{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./etc/resolv.conf", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "./usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "./usr/bin/x", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0},
		{Name: "./usr/bin/y", Typeflag: tar.TypeLink, Linkname: "./usr/bin/x"},
		{Name: "./bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin", Mode: 0o777},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	var out bytes.Buffer
	dirs, err := normalizeRootfs(&raw, &out)
	if err != nil {
		t.Fatal(err)
	}
	got := readTar(t, &out)
	want := map[string]tarEntry{
		"dev":       {Type: tar.TypeDir, Mode: 0o755},
		"etc":       {Type: tar.TypeDir, Mode: 0o755},
		"usr/bin":   {Type: tar.TypeDir, Mode: 0o755},
		"usr/bin/x": {Type: tar.TypeReg, Mode: 0o4755},
		"usr/bin/y": {Type: tar.TypeLink, Link: "usr/bin/x"},
		"bin":       {Type: tar.TypeSymlink, Mode: 0o777, Link: "usr/bin"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("normalised:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(sortedKeys(dirs), []string{"dev", "etc", "usr/bin"}) {
		t.Errorf("dirs: %v", dirs)
	}
}

func TestWriteLayer(t *testing.T) {
	entries := withParents([]layerEntry{{Name: "b/c/f", Mode: 0o600, Data: []byte("x")}, {Name: "a", Mode: 0o755, Data: []byte("yy")}},
		func(d string) bool { return d == "b" })
	mtime := time.Unix(1234, 0)
	l1, err := writeLayer(entries, mtime)
	if err != nil {
		t.Fatal(err)
	}
	l2, _ := writeLayer([]layerEntry{entries[2], entries[1], entries[0]}, mtime)
	if !bytes.Equal(l1, l2) {
		t.Error("the order of the entries changes the layer")
	}
	zr, err := gzip.NewReader(bytes.NewReader(l1))
	if err != nil {
		t.Fatal(err)
	}
	got := readTar(t, zr)
	want := map[string]tarEntry{
		"a":     {Type: tar.TypeReg, Mode: 0o755, Size: 2, Data: "yy"},
		"b/c":   {Type: tar.TypeDir, Mode: 0o755},
		"b/c/f": {Type: tar.TypeReg, Mode: 0o600, Size: 1, Data: "x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layer:\n got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{"/abs", "dir/", "a/../b", ""} {
		if _, err := writeLayer([]layerEntry{{Name: bad}}, mtime); err == nil {
			t.Errorf("entry %q: no error", bad)
		}
	}
	if _, err := writeLayer([]layerEntry{{Name: "a"}, {Name: "a"}}, mtime); err == nil {
		t.Error("duplicate entry: no error")
	}
	data, mode, err := readLayerFile(bytes.NewReader(l1), "b/c/f")
	if err != nil || string(data) != "x" || mode != 0o600 {
		t.Errorf("readLayerFile: %q %o %v", data, mode, err)
	}
	if _, _, err := readLayerFile(bytes.NewReader(l1), "b/c"); err == nil {
		t.Error("readLayerFile of a directory: no error")
	}
}

func TestRootfsCacheKeyAndAge(t *testing.T) {
	c := &RootfsCache{Dir: t.TempDir(), MaxAge: time.Hour, Log: t.Logf}
	a := c.key(DebianBase{Suite: "bookworm", Packages: []string{"iptables", "ipset"}}, "amd64")
	if a != c.key(DebianBase{Suite: "bookworm", Packages: []string{"ipset", "iptables"}}, "amd64") {
		t.Error("the package order changes the key")
	}
	for _, other := range []string{
		c.key(DebianBase{Suite: "trixie", Packages: []string{"iptables", "ipset"}}, "amd64"),
		c.key(DebianBase{Suite: "bookworm", Packages: []string{"iptables"}}, "amd64"),
		c.key(DebianBase{Suite: "bookworm", Packages: []string{"iptables", "ipset"}}, "arm64"),
	} {
		if other == a {
			t.Errorf("different bases share key %s", a)
		}
	}
	base := DebianBase{Suite: "bookworm", Packages: []string{"x"}}
	fakeRootfs(t, c, base, map[string]string{"etc/x": "x"})
	r, err := c.Get(context.Background(), base, runtime.GOARCH)
	if err != nil || !r.Dirs["etc"] || r.Packages[0] != "fake 1" {
		t.Fatalf("fresh cache entry not reused: %+v %v", r, err)
	}
	if _, age, err := loadRootfs(filepath.Join(c.Dir, c.key(base, runtime.GOARCH))); err != nil || age > time.Hour {
		t.Errorf("age %v %v", age, err)
	}
}

// A mount left in a chroot is unmounted before the chroot is removed, so
// that the removal never reaches through it.
func TestRemoveUnmounted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPING: needs root to mount")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "chroot", "proc")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mnt, syscall.MNT_DETACH) })
	if got := MountsUnder(dir); len(got) != 1 || got[0] != mnt {
		t.Fatalf("MountsUnder: %v", got)
	}
	if err := removeUnmounted(filepath.Join(dir, "chroot")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "chroot")); !os.IsNotExist(err) || len(MountsUnder(dir)) != 0 {
		t.Errorf("chroot still there (%v) or mounted: %v", err, MountsUnder(dir))
	}
}
