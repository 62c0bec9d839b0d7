package secureserve

import (
	"fmt"
	"net/http"
	"strings"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/client-go/rest"
)

// Audience is a path prefix served behind its own guard: its tokens must
// be bound to one of Audiences (the TokenReview asks the API server for
// those, so a token of the API server's own audience is refused there, and
// a token for Audiences is refused by the API server). Such a token, given
// to a node component, is worth nothing against the API server.
//
// Requests relayed by the API server's proxy (pods/proxy) lose their
// Authorization header, which the API server consumed: they carry the
// token in Header ("Bearer <token>") instead.
type Audience struct {
	Prefix    string
	Audiences []string
	Header    string
	Handler   http.Handler
}

// mount serves each Audience's prefix with its guard, the rest with def.
func mount(cfg *rest.Config, def http.Handler, auds []Audience) (http.Handler, error) {
	if len(auds) == 0 {
		return def, nil
	}
	mux := http.NewServeMux()
	mux.Handle("/", def)
	for _, a := range auds {
		if len(a.Audiences) == 0 || !strings.HasSuffix(a.Prefix, "/") {
			return nil, fmt.Errorf("secure path %q: want audiences and a prefix ending with /", a.Prefix)
		}
		auds := authenticator.Audiences(a.Audiences)
		g, err := wrap(cfg, auds, a.Handler)
		if err != nil {
			return nil, err
		}
		mux.Handle(a.Prefix, fromHeader(a.Header, withAudiences(auds, g)))
	}
	return mux, nil
}

// fromHeader moves the token of a relayed request from header to
// Authorization, where the token authenticator reads it.
func fromHeader(header string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if header != "" {
			if v := r.Header.Get(header); v != "" {
				r = r.Clone(r.Context())
				r.Header.Set("Authorization", v)
				r.Header.Del(header)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// withAudiences asks the token review for the audiences: the API server
// then accepts only tokens bound to one of them.
func withAudiences(auds authenticator.Audiences, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(authenticator.WithAudiences(r.Context(), auds)))
	})
}
