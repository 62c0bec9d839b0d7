package model

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"strconv"
)

// hashService fingerprints everything a backend renders for a service port.
func hashService(s *Service) string {
	h := sha256.New()
	w := func(parts ...string) {
		for _, p := range parts {
			h.Write([]byte(p))
			h.Write([]byte{0})
		}
	}
	w(s.Key, string(s.Algorithm), strconv.FormatBool(s.Affinity.ClientIP), s.Affinity.Timeout.String(),
		strconv.FormatBool(s.InternalLocal), strconv.FormatBool(s.ExternalLocal),
		strconv.Itoa(int(s.HealthCheckNodePort)), s.Policy)
	for _, f := range s.Frontends {
		w("F", string(f.Kind), f.Addr.String(), strconv.Itoa(int(f.Port)), string(f.Protocol),
			string(f.Masquerade), strconv.FormatBool(f.Localhost))
		for _, r := range f.SourceRanges {
			w("R", r.String())
		}
	}
	writeEndpoints(h, "I", s.InternalEndpoints)
	writeEndpoints(h, "E", s.ExternalEndpoints)
	writeEndpoints(h, "C", s.ClusterEndpoints)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func writeEndpoints(h hash.Hash, tag string, eps []Endpoint) {
	for _, e := range eps {
		b := e.AddrPort().AppendTo([]byte(tag))
		b = append(b, flag(e.Ready), flag(e.Serving), flag(e.Terminating), flag(e.Local), 0)
		h.Write(b)
	}
	h.Write([]byte{'|'})
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
