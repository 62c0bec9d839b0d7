package model

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// hashService fingerprints everything a backend renders for a service port.
// It appends a canonical encoding to one buffer and hashes it once.
func hashService(s *Service) string {
	buf := make([]byte, 0, 256+64*(len(s.Frontends)+len(s.InternalEndpoints)+len(s.ExternalEndpoints)+len(s.ClusterEndpoints)))
	str := func(parts ...string) {
		for _, p := range parts {
			buf = append(buf, p...)
			buf = append(buf, 0)
		}
	}
	num := func(n int64) { buf = strconv.AppendInt(buf, n, 10); buf = append(buf, 0) }
	str(s.Key, string(s.Algorithm), s.Policy)
	buf = append(buf, flag(s.Affinity.ClientIP), flag(s.InternalLocal), flag(s.ExternalLocal), 0)
	num(int64(s.Affinity.Timeout))
	num(int64(s.HealthCheckNodePort))
	for _, f := range s.Frontends {
		str("F", string(f.Kind), string(f.Protocol), string(f.Masquerade))
		buf = f.AddrPort().AppendTo(buf)
		buf = append(buf, flag(f.Localhost), 0)
		for _, r := range f.SourceRanges {
			buf = r.AppendTo(buf)
			buf = append(buf, ',')
		}
		buf = append(buf, 0)
	}
	buf = appendEndpoints(buf, 'I', s.InternalEndpoints)
	buf = appendEndpoints(buf, 'E', s.ExternalEndpoints)
	buf = appendEndpoints(buf, 'C', s.ClusterEndpoints)
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:16])
}

func appendEndpoints(buf []byte, tag byte, eps []Endpoint) []byte {
	buf = append(buf, tag)
	for _, e := range eps {
		buf = e.AddrPort().AppendTo(buf)
		buf = append(buf, flag(e.Ready), flag(e.Serving), flag(e.Terminating), flag(e.Local), 0)
	}
	return append(buf, '|')
}

func flag(b bool) byte {
	if b {
		return '1'
	}
	return '0'
}

// Changes lists service keys that differ between two states, each sorted.
type Changes struct {
	Added   []string
	Removed []string
	Changed []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Changed) == 0
}

// Diff compares two states by service key and content hash. A nil old state
// means every service is added.
func Diff(old, cur *State) Changes {
	var c Changes
	var os, ns []*Service
	if old != nil {
		os = old.Services
	}
	if cur != nil {
		ns = cur.Services
	}
	i, j := 0, 0
	for i < len(os) || j < len(ns) {
		switch {
		case j == len(ns) || (i < len(os) && os[i].Key < ns[j].Key):
			c.Removed = append(c.Removed, os[i].Key)
			i++
		case i == len(os) || ns[j].Key < os[i].Key:
			c.Added = append(c.Added, ns[j].Key)
			j++
		default:
			if os[i].Hash != ns[j].Hash {
				c.Changed = append(c.Changed, ns[j].Key)
			}
			i++
			j++
		}
	}
	return c
}
