package netns

import (
	"testing"

	"github.com/synterix/synterix-kube-proxy/test/echo"
)

// Server is an echo server (test/echo): every TCP connection is greeted
// with "id=<ID> from=<client>" and then echoes lines, every UDP datagram is
// answered with that line and msg=<payload>.
type Server = echo.Server

// Serve starts an echo server with identity id on addr ("ip:port") and
// proto ("tcp" or "udp") inside the namespace; t.Cleanup closes it.
func (n *NS) Serve(t testing.TB, proto, addr, id string) *Server {
	t.Helper()
	var s *Server
	if err := n.Do(func() (err error) { s, err = echo.Listen(proto, addr, id); return err }); err != nil {
		t.Fatalf("listen %s %s in %s: %v", proto, addr, n.Name, err)
	}
	n.addServer(id, proto+"/"+addr)
	t.Cleanup(s.Close)
	return s
}
