package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// Annotations of the archive's index that name the image: containerd's
// import (ctr images import, and so kubelet nodes) uses the first, skopeo
// and the OCI tools the second (the tag).
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// fullRef returns ref as containerd spells it (docker.io/library/x:tag for
// a bare x) and its tag. A digest is not allowed: the image is new.
func fullRef(ref string) (full, tag string, err error) {
	t, err := name.NewTag(ref)
	i := strings.LastIndexByte(ref, ':')
	if err == nil && i <= strings.LastIndexByte(ref, '/') {
		err = fmt.Errorf("no tag")
	}
	if err != nil {
		return "", "", fmt.Errorf("image name %q: want [registry/]repository:tag: %w", ref, err)
	}
	repo := ref[:i]
	first, _, hasSlash := strings.Cut(repo, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !hasSlash {
			repo = "library/" + repo
		}
		repo = "docker.io/" + repo
	}
	return repo + ":" + t.TagStr(), t.TagStr(), nil
}

// WriteArchive writes img as an OCI archive (a tar of an OCI image layout)
// named ref, through a temporary file renamed into place. It returns the
// manifest digest.
func WriteArchive(img v1.Image, ref, dst string, mtime time.Time) (v1.Hash, error) {
	full, tag, err := fullRef(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	dir, err := os.MkdirTemp(filepath.Dir(dst), ".layout-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		annotationImageName: full, annotationRefName: tag,
	})); err != nil {
		return v1.Hash{}, err
	}
	tmp := dst + ".tmp"
	if err := tarDir(dir, tmp, mtime); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// tarDir writes the tree under dir into the tar file dst, in lexical order
// with fixed owners and times, so that the same layout gives the same file.
func tarDir(dir, dst string, mtime time.Time) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if d.IsDir() {
			h.Name, h.Mode, h.Typeflag = h.Name+"/", 0o755, tar.TypeDir
			return tw.WriteHeader(h)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h.Size = info.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
