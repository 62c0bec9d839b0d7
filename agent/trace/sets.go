package trace

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Set is an ipset: its type and its members as "ipset save" prints them
// ("10.96.0.10,tcp:80", "10.0.0.0/8", "10.244.1.5,tcp:8080,10.244.1.5").
type Set struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Members []string `json:"members,omitempty"`
	parsed  [][]setElem
}

// setElem is one dimension of a member: a prefix (ip and net dimensions)
// or a protocol and port.
type setElem struct {
	pfx   netip.Prefix
	proto string
	port  uint16
}

// dims returns the dimensions of a set type ("hash:ip,port,ip" -> ip, port, ip).
func (s *Set) dims() ([]string, error) {
	_, d, ok := strings.Cut(s.Type, ":")
	if !ok || !strings.HasPrefix(s.Type, "hash:") {
		return nil, fmt.Errorf("set type %q is not supported by the tracer", s.Type)
	}
	dims := strings.Split(d, ",")
	for _, x := range dims {
		if x != "ip" && x != "net" && x != "port" {
			return nil, fmt.Errorf("set type %q is not supported by the tracer", s.Type)
		}
	}
	return dims, nil
}

// parse reads the members once.
func (s *Set) parse() error {
	if s.parsed != nil || len(s.Members) == 0 {
		return nil
	}
	dims, err := s.dims()
	if err != nil {
		return err
	}
	out := make([][]setElem, 0, len(s.Members))
	for _, m := range s.Members {
		parts := strings.Split(m, ",")
		if len(parts) != len(dims) {
			return fmt.Errorf("member %q does not have the %d parts of %s", m, len(dims), s.Type)
		}
		el := make([]setElem, len(dims))
		for i, d := range dims {
			if el[i], err = parseElem(d, parts[i]); err != nil {
				return fmt.Errorf("member %q: %w", m, err)
			}
		}
		out = append(out, el)
	}
	s.parsed = out
	return nil
}

func parseElem(dim, v string) (setElem, error) {
	if dim != "port" {
		p, err := parsePrefix(v)
		return setElem{pfx: p}, err
	}
	proto, port, ok := strings.Cut(v, ":")
	if !ok {
		proto, port = "tcp", v
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return setElem{proto: strings.ToLower(proto), port: uint16(n)}, err
}

// Contains reports whether the packet's fields picked by flags (src or dst,
// one per dimension) are a member of the set.
func (s *Set) Contains(flags []string, proto string, src, dst netip.Addr, sport, dport uint16) (bool, error) {
	dims, err := s.dims()
	if err != nil {
		return false, err
	}
	if len(flags) < len(dims) {
		return false, fmt.Errorf("%d flags for the %d dimensions of %s", len(flags), len(dims), s.Type)
	}
	if err := s.parse(); err != nil {
		return false, err
	}
	for _, m := range s.parsed {
		if memberMatches(m, dims, flags, proto, src, dst, sport, dport) {
			return true, nil
		}
	}
	return false, nil
}

func memberMatches(m []setElem, dims, flags []string, proto string, src, dst netip.Addr, sport, dport uint16) bool {
	for i, d := range dims {
		fromSrc := flags[i] == "src"
		if d == "port" {
			p := dport
			if fromSrc {
				p = sport
			}
			if m[i].proto != proto || m[i].port != p {
				return false
			}
			continue
		}
		a := dst
		if fromSrc {
			a = src
		}
		if !m[i].pfx.Contains(a) {
			return false
		}
	}
	return true
}
