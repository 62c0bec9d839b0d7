package kubenode

// STAND-IN IMAGES. Until the real images (bin/images/{pause,echo}.tar, from
// `make images`) land, the tests build one static binary (./standin) and
// pack it as two throw-away OCI images in one archive. Replace this file's
// use with bin/images when they exist.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"time"
)

// Stand-in image names. Pods that use them must say imagePullPolicy: Never:
// there is no registry.
const (
	StandinPauseImage = "synx.local/standin/pause:v0"
	StandinEchoImage  = "synx.local/standin/echo:v0"
)

// BuildStandinImages builds test/kubenode/standin and writes an OCI image
// archive holding StandinPauseImage and StandinEchoImage into dir; it
// returns the archive's path.
func BuildStandinImages(repoRoot, dir string) (string, error) {
	bin := filepath.Join(dir, "standin")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./test/kubenode/standin")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build standin: %w: %s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	layer, err := tarFiles(map[string][]byte{"standin": data}, 0o755)
	if err != nil {
		return "", err
	}
	arc := ociArchive{blobs: map[string][]byte{}}
	layerDesc := arc.add("application/vnd.oci.image.layer.v1.tar", layer, nil)
	for _, img := range [][2]string{{StandinPauseImage, "pause"}, {StandinEchoImage, "echo"}} {
		ref, mode := img[0], img[1]
		cfg := map[string]any{
			"architecture": runtime.GOARCH, "os": "linux",
			"config": map[string]any{"Entrypoint": []string{"/standin", mode}},
			"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc["digest"].(string)}},
		}
		cfgJSON, _ := json.Marshal(cfg)
		manifest, _ := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     "application/vnd.oci.image.manifest.v1+json",
			"config":        arc.add("application/vnd.oci.image.config.v1+json", cfgJSON, nil),
			"layers":        []any{layerDesc},
		})
		arc.manifests = append(arc.manifests, arc.add("application/vnd.oci.image.manifest.v1+json", manifest, map[string]any{
			"annotations": map[string]string{"io.containerd.image.name": ref},
			"platform":    map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
		}))
	}
	path := filepath.Join(dir, "standin-images.tar")
	return path, arc.write(path)
}

// ociArchive is an OCI image layout being written: content-addressed blobs
// and the index's manifests.
type ociArchive struct {
	blobs     map[string][]byte
	manifests []map[string]any
}

// add stores a blob and returns its descriptor, with extra fields merged.
func (a *ociArchive) add(mediaType string, data []byte, extra map[string]any) map[string]any {
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	a.blobs["blobs/sha256/"+hex.EncodeToString(sum[:])] = data
	d := map[string]any{"mediaType": mediaType, "digest": digest, "size": len(data)}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

func (a *ociArchive) write(path string) error {
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": a.manifests,
	})
	files := map[string][]byte{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`), "index.json": index}
	for k, v := range a.blobs {
		files[k] = v
	}
	data, err := tarFiles(files, 0o644)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// tarFiles packs files (sorted by tar readers' indifference to order) with
// one mode and a fixed time, so equal inputs give equal digests.
func tarFiles(files map[string][]byte, mode int64) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for d := filepath.Dir(name); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	dirList := make([]string, 0, len(dirs))
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	epoch := time.Unix(0, 0)
	for _, d := range dirList {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, name := range names {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(files[name])), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
