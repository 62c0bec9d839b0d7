package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ServiceRef names a Service in a health check reply.
type ServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// NodePortService is one HealthCheckNodePort to serve.
type NodePortService struct {
	Service        ServiceRef
	LocalEndpoints int
}

// Listen opens a listener; the agent passes one that runs in the node's
// network namespace.
type Listen func(network, addr string) (net.Listener, error)

// NodePorts runs one HTTP server per HealthCheckNodePort. Load balancers
// probe it: 200 with the count of local endpoints when there is at least
// one and the agent is healthy (State.Healthy: keeping up, and the node not
// being deleted), else 503, so that they stop sending to a node that
// cannot serve the Service or is being drained.
type NodePorts struct {
	listen Listen
	proxy  *State

	mu      sync.Mutex
	servers map[int32]*nodePortServer
}

type nodePortServer struct {
	mu    sync.Mutex
	svc   NodePortService
	srv   *http.Server
	addr  string
	proxy *State
}

// NewNodePorts returns a manager that opens its listeners with listen
// (net.Listen when nil) and judges the agent's health by proxy (nil:
// always healthy).
func NewNodePorts(listen Listen, proxy *State) *NodePorts {
	if listen == nil {
		listen = net.Listen
	}
	return &NodePorts{listen: listen, proxy: proxy, servers: map[int32]*nodePortServer{}}
}

// Update makes the running servers match want (port -> service). It
// returns the errors of ports it could not open; they are retried on the
// next Update.
func (n *NodePorts) Update(want map[int32]NodePortService) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for port, s := range n.servers {
		if _, ok := want[port]; !ok {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = s.srv.Shutdown(ctx)
			cancel()
			delete(n.servers, port)
		}
	}
	for port, svc := range want {
		if s := n.servers[port]; s != nil {
			s.mu.Lock()
			s.svc = svc
			s.mu.Unlock()
			continue
		}
		l, err := n.listen("tcp", net.JoinHostPort("", strconv.Itoa(int(port))))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s := &nodePortServer{svc: svc, addr: l.Addr().String(), proxy: n.proxy}
		s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
		n.servers[port] = s
		go func() {
			if err := s.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				klog.ErrorS(err, "Health check node port server stopped", "port", port)
			}
		}()
		klog.V(2).InfoS("Serving health check node port", "port", port, "service", svc.Service)
	}
	return errors.Join(errs...)
}

// Ports returns how many servers run.
func (n *NodePorts) Ports() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.servers)
}

// Close stops every server.
func (n *NodePorts) Close() {
	_ = n.Update(nil)
}

// nodePortReply is the JSON body of a HealthCheckNodePort.
type nodePortReply struct {
	Service        ServiceRef `json:"service"`
	LocalEndpoints int        `json:"localEndpoints"`
	// ServiceProxyHealthy is State.Healthy: false while the agent lags
	// behind or the node is being deleted.
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// ServeHTTP answers 200 when the Service has local endpoints and the agent
// is healthy, else 503; the endpoint count is also in the
// X-Load-Balancing-Endpoint-Weight header, for load balancers that weigh
// nodes by it.
func (s *nodePortServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	svc := s.svc
	s.mu.Unlock()
	healthy := true
	if s.proxy != nil {
		healthy, _ = s.proxy.Healthy()
	}
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(svc.LocalEndpoints))
	write(w, svc.LocalEndpoints > 0 && healthy,
		nodePortReply{Service: svc.Service, LocalEndpoints: svc.LocalEndpoints, ServiceProxyHealthy: healthy})
}
