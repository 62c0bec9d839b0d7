package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
	"github.com/synterix/synterix-kube-proxy/test/poll"
)

// waitHealthy polls url with hc until it answers 200 OK, for at most
// timeout; with no url, until the processes have stayed up for two seconds.
// It fails at once when one of procs exits. The last of procs is the one
// waited for; the error names its log.
func waitHealthy(ctx context.Context, hc *http.Client, url string, timeout time.Duration, procs ...*netns.Process) error {
	p := procs[len(procs)-1]
	start := time.Now()
	return poll.Until(ctx, timeout, fmt.Sprintf("%s healthy at %q (log %s)", p.Name, url, p.LogPath), func(context.Context) (bool, string, error) {
		for _, q := range procs {
			if !q.Running() {
				return false, "", fmt.Errorf("%s exited: see %s", q.Name, q.LogPath)
			}
		}
		if url == "" {
			return time.Since(start) > 2*time.Second, "running", nil
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err.Error(), nil
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("HTTP %d %s", resp.StatusCode, strings.TrimSpace(string(body))), nil
	})
}
