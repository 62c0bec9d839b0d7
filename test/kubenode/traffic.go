package kubenode

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/synterix/synterix-kube-proxy/test/netns"
)

// HTTPGet sends one GET from inside the namespace and returns the body; any
// status but 200 is an error.
func HTTPGet(ctx context.Context, ns *netns.NS, url string) (string, error) {
	return httpGet(ctx, ns.Name, ns.Dial, url)
}

func httpGet(ctx context.Context, from string, dial func(context.Context, string, string) (net.Conn, error), url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("from %s: %w", from, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("from %s: GET %s: %s", from, url, resp.Status)
	}
	return string(body), nil
}
