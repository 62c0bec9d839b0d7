package kubenode

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// Image is one image `make images` built: an entry of
// bin/images/images.json.
type Image struct {
	// Target is the build target: manager, agent, pause or echo.
	Target string `json:"target"`
	// Image is the name containerd gives it on import.
	Image string `json:"image"`
	// Archive is the OCI archive's absolute path.
	Archive string `json:"archive"`
	Digest  string `json:"digest"`
}

// LoadImages reads the images.json of dir (make images writes it to
// bin/images) and checks that every archive it lists exists. Pods use
// these images with imagePullPolicy Never or IfNotPresent: nodes import
// them, there is no registry.
func LoadImages(dir string) (map[string]Image, error) {
	data, err := os.ReadFile(filepath.Join(dir, "images.json"))
	if err != nil {
		return nil, fmt.Errorf("no images: run 'make images' (%w)", err)
	}
	var list []Image
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s/images.json: %w", dir, err)
	}
	out := map[string]Image{}
	for _, img := range list {
		if _, err := os.Stat(img.Archive); err != nil {
			return nil, fmt.Errorf("image %s: %w: run 'make images'", img.Image, err)
		}
		out[img.Target] = img
	}
	if _, ok := out["pause"]; !ok {
		return nil, fmt.Errorf("%s/images.json lists no pause image: run 'make images'", dir)
	}
	return out, nil
}

// archives returns the archives of the images, in target order.
func archives(images map[string]Image) []string {
	var out []string
	for _, img := range images {
		out = append(out, img.Archive)
	}
	sort.Strings(out)
	return out
}
