package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// layerEntry is one file or directory of a layer the builder writes itself.
type layerEntry struct {
	Name string // relative, no leading or trailing slash: "etc/passwd"
	Mode int64  // permission bits
	Dir  bool
	Data []byte
}

// withParents adds the missing parent directories of entries (0755, as
// COPY creates them), except those the layers below already have.
func withParents(entries []layerEntry, have func(dir string) bool) []layerEntry {
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.Name] = true
	}
	out := append([]layerEntry(nil), entries...)
	for _, e := range entries {
		for d := path.Dir(e.Name); d != "." && d != "/"; d = path.Dir(d) {
			if seen[d] || (have != nil && have(d)) {
				continue
			}
			seen[d] = true
			out = append(out, layerEntry{Name: d, Mode: 0o755, Dir: true})
		}
	}
	return out
}

// writeLayer writes entries as a gzip-compressed tar that is the same for
// the same entries: sorted by name, owned by 0:0, every mtime set to mtime.
func writeLayer(entries []layerEntry, mtime time.Time) ([]byte, error) {
	entries = append([]layerEntry(nil), entries...)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for i, e := range entries {
		if e.Name == "" || strings.HasPrefix(e.Name, "/") || strings.HasSuffix(e.Name, "/") || path.Clean(e.Name) != e.Name {
			return nil, fmt.Errorf("layer entry %q: want a clean relative path", e.Name)
		}
		if i > 0 && entries[i-1].Name == e.Name {
			return nil, fmt.Errorf("layer entry %q twice", e.Name)
		}
		h := &tar.Header{Name: e.Name, Mode: e.Mode, ModTime: mtime, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(e.Data))}
		if e.Dir {
			h.Name, h.Typeflag, h.Size = e.Name+"/", tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// normalizeRootfs copies a root file system tarball (mmdebstrap's) into a
// layer: names without "./", no device nodes (the runtime provides /dev),
// no resolv.conf, hostname or hosts (the runtime mounts its own). It returns
// the directories of the layer, which later layers need not create.
func normalizeRootfs(r io.Reader, w io.Writer) (dirs map[string]bool, err error) {
	dirs = map[string]bool{}
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the rootfs tarball: %w", err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+h.Name), "/"), "/")
		if name == "" || dropFromRootfs(name) {
			continue
		}
		if h.Typeflag == tar.TypeDir {
			dirs[name] = true
			h.Name = name + "/"
		} else {
			h.Name = name
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	return dirs, tw.Close()
}

func dropFromRootfs(name string) bool {
	switch name {
	case "etc/resolv.conf", "etc/hostname", "etc/hosts":
		return true
	}
	return strings.HasPrefix(name, "dev/")
}

// readLayerFile returns the content and mode of the regular file name in a
// gzip-compressed layer.
func readLayerFile(r io.Reader, name string) ([]byte, int64, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, 0, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, 0, fmt.Errorf("%s is not in the layer", name)
		}
		if err != nil {
			return nil, 0, err
		}
		if strings.TrimSuffix(h.Name, "/") != name {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return nil, 0, fmt.Errorf("%s is not a regular file in the layer (type %c)", name, h.Typeflag)
		}
		b, err := io.ReadAll(tr)
		return b, h.Mode & 0o7777, err
	}
}
