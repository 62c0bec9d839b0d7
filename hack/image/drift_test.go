package main

// The drift check. The local builder takes everything it can from the
// Dockerfile (NewPlan), so most drift is impossible by construction: a new
// package, flag, ENV, LABEL, USER or ENTRYPOINT flows into both builds, and
// an instruction the builder cannot reproduce fails NewPlan. What is left,
// this test checks: that the real Dockerfile is understood; that the
// translations the builder makes hold (debian:<release>-slim is Debian
// <release>; golang:<go>-<release> is the Go of go.mod on the same
// release); that the Docker build context holds every source of the
// binaries; that every -X names a variable that exists; and the policy
// both builds must keep (static binaries, non-root manager on an empty
// base, the agent's netfilter userspace).

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

const repoRoot = "../.."

var driftArgs = map[string]string{"VERSION": "v9.8.7", "AGENT_IMAGE": "registry.example/x/synterix-kube-proxy-agent:v9.8.7"}

func realPlan(t *testing.T) *Plan {
	t.Helper()
	p, err := LoadPlan(filepath.Join(repoRoot, "Dockerfile"), driftArgs)
	if err != nil {
		t.Fatalf("the local builder does not understand the Dockerfile: %v", err)
	}
	if err := addTestImages(p, driftArgs["VERSION"]); err != nil {
		t.Fatal(err)
	}
	for _, target := range AllTargets {
		if p.Images[target] == nil {
			t.Fatalf("no target %s", target)
		}
	}
	return p
}

func TestDriftManagerImage(t *testing.T) {
	p := realPlan(t)
	m := p.Images["manager"]
	if m.Debian != nil {
		t.Errorf("the manager is built FROM %s; want scratch (no shell, no package manager)", m.Debian.Image)
	}
	if m.Config.User != "65532:65532" {
		t.Errorf("manager user %q, want 65532:65532", m.Config.User)
	}
	if !reflect.DeepEqual(m.Config.Entrypoint, []string{"/manager"}) || m.Config.Cmd != nil {
		t.Errorf("manager entrypoint %v cmd %v", m.Config.Entrypoint, m.Config.Cmd)
	}
	checkCommonConfig(t, m)
	// Exactly these files, and the CA bundle from Debian's ca-certificates
	// of the agent's release.
	files := map[string]Copy{}
	for _, c := range m.Copies {
		for _, s := range c.Sources {
			dst := c.Dest
			if strings.HasSuffix(dst, "/") {
				dst += path.Base(s)
			}
			files[dst] = c
		}
	}
	want := []string{"/etc/group", "/etc/passwd", "/etc/ssl/certs/ca-certificates.crt", "/manager"}
	if got := sortedKeys(files); !reflect.DeepEqual(got, want) {
		t.Errorf("manager files %v, want %v", got, want)
	}
	certs := p.Images[files["/etc/ssl/certs/ca-certificates.crt"].From]
	if certs == nil || certs.Debian == nil || !reflect.DeepEqual(certs.Debian.Packages, []string{"ca-certificates"}) {
		t.Errorf("CA bundle does not come from a Debian stage with ca-certificates alone: %+v", certs)
	} else if certs.Debian.Suite != p.Images["agent"].Debian.Suite {
		t.Errorf("CA certificates from %s, agent on %s", certs.Debian.Suite, p.Images["agent"].Debian.Suite)
	}
	if c := files["/manager"]; c.From != p.Build.Name || c.Sources[0] != "/out/manager" {
		t.Errorf("/manager comes from %s %v", c.From, c.Sources)
	}
	for file, want := range map[string]string{"passwd": "nonroot:x:65532:65532:", "group": "nonroot:x:65532:"} {
		c := files["/etc/"+file]
		if c.From != "" {
			t.Fatalf("/etc/%s is not from the build context", file)
		}
		b, err := os.ReadFile(filepath.Join(repoRoot, c.Sources[slices.IndexFunc(c.Sources, func(s string) bool { return path.Base(s) == file })]))
		if err != nil || !strings.Contains(string(b), "\n"+want) {
			t.Errorf("/etc/%s has no line %q: %v\n%s", file, want, err, b)
		}
	}
}

func TestDriftAgentImage(t *testing.T) {
	p := realPlan(t)
	a := p.Images["agent"]
	if a.Debian == nil {
		t.Fatal("the agent has no Debian base")
	}
	for _, pkg := range []string{"iptables", "nftables", "ipset", "conntrack"} {
		if !slices.Contains(a.Debian.Packages, pkg) {
			t.Errorf("the agent lacks Debian's %s (has %v)", pkg, a.Debian.Packages)
		}
	}
	if u := a.Config.User; u != "" && u != "0" && u != "0:0" && u != "root" {
		t.Errorf("agent user %q: it programs the kernel as root", u)
	}
	if !reflect.DeepEqual(a.Config.Entrypoint, []string{"/agent"}) || a.Config.Cmd != nil {
		t.Errorf("agent entrypoint %v cmd %v", a.Config.Entrypoint, a.Config.Cmd)
	}
	checkCommonConfig(t, a)
}

func checkCommonConfig(t *testing.T, img *ImageSpec) {
	t.Helper()
	if !reflect.DeepEqual(img.Config.Env, []string{"PATH=" + DefaultPath}) {
		t.Errorf("%s env %v, want PATH only", img.Name, img.Config.Env)
	}
	if v := img.Config.Labels["org.opencontainers.image.version"]; v != driftArgs["VERSION"] {
		t.Errorf("%s version label %q, want the VERSION build argument", img.Name, v)
	}
}

// Every binary is static and stamped with its version; every -X names a
// string variable that exists (the linker ignores one that does not).
func TestDriftGoBuilds(t *testing.T) {
	p := realPlan(t)
	pkgs := map[string]string{}
	for out, g := range p.Build.Binaries {
		pkgs[g.Package] = out
		if !reflect.DeepEqual(g.Env, []string{"CGO_ENABLED=0"}) {
			t.Errorf("%s: env %v, want CGO_ENABLED=0", out, g.Env)
		}
		if len(g.Flags) != 3 || g.Flags[0] != "-trimpath" || g.Flags[1] != "-ldflags" {
			t.Errorf("%s: flags %q, want -trimpath -ldflags ...", out, g.Flags)
			continue
		}
		ld := strings.Fields(g.Flags[2])
		if len(ld) < 4 || ld[0] != "-s" || ld[1] != "-w" || !slices.Contains(ld, "main.version="+driftArgs["VERSION"]) {
			t.Errorf("%s: ldflags %q, want -s -w -X main.version=$VERSION", out, g.Flags[2])
		}
		for i := 2; i+1 < len(ld); i += 2 {
			name, _, _ := strings.Cut(ld[i+1], "=")
			if ld[i] != "-X" || !strings.HasPrefix(name, "main.") {
				t.Errorf("%s: ldflags %q: want -X main.name=value pairs", out, g.Flags[2])
				continue
			}
			if !hasStringVar(t, filepath.Join(repoRoot, g.Package), strings.TrimPrefix(name, "main.")) {
				t.Errorf("%s: -X %s names no string variable of %s", out, name, g.Package)
			}
		}
	}
	if pkgs["./cmd/manager"] != "/out/manager" || pkgs["./cmd/agent"] != "/out/agent" {
		t.Errorf("binaries %v", pkgs)
	}
	if !strings.Contains(p.Build.Binaries["/out/manager"].Flags[2], "-X main.agentImage="+driftArgs["AGENT_IMAGE"]) {
		t.Errorf("the manager's default agent image is not AGENT_IMAGE: %q", p.Build.Binaries["/out/manager"].Flags[2])
	}
	agent := p.Build.Binaries["/out/agent"]
	for _, ti := range testImages {
		g := p.Build.Binaries["/out/"+ti.name]
		if !reflect.DeepEqual(g.Flags, agent.Flags) || !reflect.DeepEqual(g.Env, agent.Env) {
			t.Errorf("%s is built with %v %q, the agent with %v %q", ti.name, g.Env, g.Flags, agent.Env, agent.Flags)
		}
	}
}

func hasStringVar(t *testing.T, dir, name string) bool {
	t.Helper()
	fset := token.NewFileSet()
	matches, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range matches {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if file.Name.Name != "main" {
			continue
		}
		for _, d := range file.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.VAR {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if n.Name != name || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						return true
					}
				}
			}
		}
	}
	return false
}

// The Go image is the Go of go.mod on the Debian release of the other
// stages, and every Debian stage is on that one release.
func TestDriftReleases(t *testing.T) {
	p := realPlan(t)
	ref, _, _ := strings.Cut(p.Build.Image, "@")
	tag := ref[strings.LastIndexByte(ref, ':')+1:]
	goVer, release, ok := strings.Cut(tag, "-")
	if !ok {
		t.Fatalf("Go image %s: want golang:<go>-<debian release>", p.Build.Image)
	}
	if mod := goModVersion(t); goVer != mod {
		t.Errorf("Go image %s builds with Go %s, go.mod says %s (the local build uses the host's Go)", p.Build.Image, goVer, mod)
	}
	for name, img := range p.Images {
		if img.Debian != nil && img.Debian.Suite != release {
			t.Errorf("stage %s is on Debian %s, the Go image on %s", name, img.Debian.Suite, release)
		}
	}
}

// goModVersion returns the major.minor of go.mod's go line.
func goModVersion(t *testing.T) string {
	f, err := os.Open(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go "); ok {
			parts := strings.SplitN(strings.TrimSpace(v), ".", 3)
			if len(parts) >= 2 {
				return parts[0] + "." + parts[1]
			}
		}
	}
	t.Fatal("go.mod has no go line")
	return ""
}

// The Docker build context (.dockerignore) and the build stage's COPY
// lines hold every Go file the binaries are built from, and every file the
// images copy from the context.
func TestDriftBuildContext(t *testing.T) {
	p := realPlan(t)
	ignore := dockerignore(t)
	covered := func(f string) bool {
		return slices.ContainsFunc(p.Build.Sources, func(s string) bool {
			return f == path.Clean(s) || strings.HasPrefix(f, strings.TrimSuffix(s, "/")+"/")
		})
	}
	files := append(goSources(t, "./cmd/manager", "./cmd/agent"), "go.mod", "go.sum")
	for _, f := range files {
		if !covered(f) {
			t.Errorf("%s is a source of the binaries, but no COPY of the build stage copies it", f)
		}
		if excluded(ignore, f) {
			t.Errorf("%s is a source of the binaries, but .dockerignore leaves it out", f)
		}
	}
	for _, img := range p.Images {
		for _, c := range img.Copies {
			for _, s := range c.Sources {
				if c.From == "" && excluded(ignore, path.Clean(s)) {
					t.Errorf("line %d copies %s, which .dockerignore leaves out", c.Line, s)
				}
			}
		}
	}
	if len(files) < 20 {
		t.Fatalf("only %d source files: go list went wrong", len(files))
	}
}

// goSources lists the module's Go and embedded files the packages build
// from, relative to the repository.
func goSources(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f",
		`{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}{{end}}`},
		pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, l := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, l)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	return files
}

func dockerignore(t *testing.T) []string {
	b, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var pats []string
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.Contains(l, "**") {
			t.Fatalf(".dockerignore pattern %q: this test matches without ** (teach it)", l)
		}
		pats = append(pats, l)
	}
	return pats
}

// excluded tells whether Docker leaves f out of the context: the last
// pattern that matches f or one of its parent directories decides.
func excluded(patterns []string, f string) bool {
	out := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = path.Clean(strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/"))
		for q := f; q != "." && q != "/"; q = path.Dir(q) {
			if ok, _ := path.Match(p, q); ok {
				out = !neg
				break
			}
		}
	}
	return out
}

func TestExcluded(t *testing.T) {
	pats := []string{"*", "!api", "!hack/image/manager", "api/secret*"}
	for f, want := range map[string]bool{
		"api/v1/types.go": false, "go.mod": true, "hack/image/manager/passwd": false,
		"hack/image/main.go": true, "api/secret.txt": true, "docs/x.md": true,
	} {
		if got := excluded(pats, f); got != want {
			t.Errorf("excluded(%s) = %v", f, got)
		}
	}
}
