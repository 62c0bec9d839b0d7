package main

import (
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultPath is the PATH of Debian's images, and the one BuildKit gives an
// image built FROM scratch.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Plan is what the Dockerfile asks for, in the terms of the local builder:
// the binaries of the Go build stage and, for every other stage, a base, the
// files copied on top and the image config.
type Plan struct {
	Build  GoStage
	Images map[string]*ImageSpec // by stage name
}

// GoStage is the Go build stage.
type GoStage struct {
	Name     string
	Image    string             // the golang image, ARGs substituted
	Sources  []string           // what it copies from the build context
	Binaries map[string]GoBuild // by output path, e.g. /out/manager
}

// GoBuild is one "go build" command.
type GoBuild struct {
	Line    int
	Env     []string // assignments before "go", e.g. CGO_ENABLED=0
	Flags   []string // everything between "build" and the package, except -o
	Out     string   // -o
	Package string   // e.g. ./cmd/manager
}

// ImageSpec is a stage that becomes an image or feeds files to one.
type ImageSpec struct {
	Name   string
	Line   int
	Debian *DebianBase // nil: FROM scratch
	Copies []Copy
	Config v1.Config
}

// DebianBase is a Debian release with packages installed on top (the
// stage's apt-get install lines).
type DebianBase struct {
	Image    string // as the Dockerfile names it, e.g. debian:bookworm-slim
	Suite    string // e.g. bookworm
	Packages []string
}

// Copy is one COPY: From is "" for the build context, else a stage name.
type Copy struct {
	Line    int
	Text    string
	From    string
	Sources []string
	Dest    string
}

// stageKind tells a Go build stage, a Debian stage and scratch apart by the
// image a stage starts from.
func stageKind(image string) (kind, suite string, err error) {
	if image == "scratch" {
		return "scratch", "", nil
	}
	ref, _, _ := strings.Cut(image, "@")
	repo, tag := ref, "latest"
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		repo, tag = ref[:i], ref[i+1:]
	}
	switch path.Base(repo) {
	case "golang":
		return "go", "", nil
	case "debian":
		suite, slim := strings.CutSuffix(tag, "-slim")
		if !slim {
			return "", "", fmt.Errorf("debian image %s: the local build makes the -slim variant (no docs, man pages or locales); use %s-slim", image, ref)
		}
		return "debian", suite, nil
	}
	return "", "", fmt.Errorf("base image %s: the local build knows golang, debian:<release>-slim and scratch only", image)
}

// NewPlan interprets the Dockerfile with the given build arguments. It
// fails on any instruction the local builder cannot reproduce, so that the
// Dockerfile cannot grow something the local images would silently lack.
func NewPlan(d *Dockerfile, buildArgs map[string]string) (*Plan, error) {
	global := map[string]string{}
	for _, in := range d.GlobalArgs {
		if err := declareArg(in, global, buildArgs, nil); err != nil {
			return nil, err
		}
	}
	p := &Plan{Images: map[string]*ImageSpec{}}
	for _, st := range d.Stages {
		if st.Name == "" {
			return nil, fmt.Errorf("line %d: every stage needs a name (FROM image AS name)", st.Line)
		}
		image, err := expand(st.From, global)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", st.Line, err)
		}
		kind, suite, err := stageKind(image)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", st.Line, err)
		}
		sp := &stagePlan{plan: p, global: global, buildArgs: buildArgs, vars: map[string]string{}}
		switch kind {
		case "go":
			if p.Build.Name != "" {
				return nil, fmt.Errorf("line %d: a second Go build stage %q (the local build knows one)", st.Line, st.Name)
			}
			p.Build = GoStage{Name: st.Name, Image: image, Binaries: map[string]GoBuild{}}
			err = sp.goStage(st)
		default:
			img := &ImageSpec{Name: st.Name, Line: st.Line, Config: v1.Config{Env: []string{"PATH=" + DefaultPath}}}
			if kind == "debian" {
				img.Debian = &DebianBase{Image: image, Suite: suite}
				img.Config.Cmd = []string{"bash"} // Debian's images run bash
			}
			p.Images[st.Name] = img
			err = sp.imageStage(st, img)
		}
		if err != nil {
			return nil, err
		}
	}
	return p, p.checkCopies()
}

// stagePlan holds the variables of the stage being interpreted.
type stagePlan struct {
	plan      *Plan
	global    map[string]string
	buildArgs map[string]string
	vars      map[string]string // ARGs and ENVs declared so far
}

// declareArg handles ARG NAME[=default]: a build argument wins over the
// default; in a stage, an ARG without default takes the global value.
func declareArg(in Instruction, vars, buildArgs, global map[string]string) error {
	name, def, hasDef := strings.Cut(in.Args, "=")
	if name == "" || strings.ContainsAny(name, " \t") {
		return fmt.Errorf("line %d: want ARG NAME[=default], got %s", in.Line, in)
	}
	def = strings.Trim(def, `"`)
	switch v, ok := buildArgs[name]; {
	case ok:
		vars[name] = v
	case hasDef:
		vars[name] = def
	default:
		vars[name] = global[name] // Docker: unset is empty
	}
	return nil
}

// goStage reads the Go build stage: context copies and go commands.
func (sp *stagePlan) goStage(st Stage) error {
	b := &sp.plan.Build
	for _, in := range st.Body {
		var err error
		switch in.Keyword {
		case "ARG":
			err = declareArg(in, sp.vars, sp.buildArgs, sp.global)
		case "WORKDIR":
		case "COPY":
			var c Copy
			if c, err = sp.copyArgs(in); err == nil {
				if c.From != "" {
					err = fmt.Errorf("line %d: the build stage copies from the context only", in.Line)
				}
				b.Sources = append(b.Sources, c.Sources...)
			}
		case "RUN":
			err = sp.goRun(in)
		default:
			err = fmt.Errorf("line %d: %s in the Go build stage is not understood by the local builder", in.Line, in.Keyword)
		}
		if err != nil {
			return err
		}
	}
	if len(b.Binaries) == 0 {
		return fmt.Errorf("line %d: the build stage builds no binary", st.Line)
	}
	return nil
}

// goRun reads RUN lines of "go mod download" and "[VAR=x ...] go build ...
// -o OUT ./pkg" commands joined by &&.
func (sp *stagePlan) goRun(in Instruction) error {
	cmds, err := sp.commands(in)
	if err != nil {
		return err
	}
	for _, c := range cmds {
		var env []string
		for len(c) > 0 && strings.Contains(c[0], "=") && !strings.HasPrefix(c[0], "-") {
			env, c = append(env, c[0]), c[1:]
		}
		switch {
		case len(c) == 3 && c[0] == "go" && c[1] == "mod" && c[2] == "download":
			continue
		case len(c) > 2 && c[0] == "go" && c[1] == "build":
		default:
			return fmt.Errorf("line %d: the local builder runs go mod download and go build only, not %q", in.Line, strings.Join(c, " "))
		}
		g := GoBuild{Line: in.Line, Env: env, Package: c[len(c)-1]}
		args := c[2 : len(c)-1]
		for i := 0; i < len(args); i++ {
			if args[i] == "-o" && i+1 < len(args) {
				g.Out = args[i+1]
				i++
				continue
			}
			g.Flags = append(g.Flags, args[i])
		}
		if g.Out == "" || !strings.HasPrefix(g.Package, "./") {
			return fmt.Errorf("line %d: want go build ... -o OUT ./package, got %q", in.Line, strings.Join(c, " "))
		}
		if _, dup := sp.plan.Build.Binaries[g.Out]; dup {
			return fmt.Errorf("line %d: %s is built twice", in.Line, g.Out)
		}
		sp.plan.Build.Binaries[g.Out] = g
	}
	return nil
}

// commands expands the variables of a RUN line and splits it into simple
// commands.
func (sp *stagePlan) commands(in Instruction) ([][]string, error) {
	words, err := splitWords(in.Args)
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", in.Line, err)
	}
	for i, w := range words {
		if words[i], err = expand(w, sp.vars); err != nil {
			return nil, fmt.Errorf("line %d: %w", in.Line, err)
		}
	}
	return splitCommands(words), nil
}

// imageStage reads a Debian or scratch stage into img.
func (sp *stagePlan) imageStage(st Stage, img *ImageSpec) error {
	cmdFromBase := img.Config.Cmd != nil
	for _, in := range st.Body {
		var err error
		switch in.Keyword {
		case "ARG":
			err = declareArg(in, sp.vars, sp.buildArgs, sp.global)
		case "RUN":
			err = sp.aptRun(in, img)
		case "COPY":
			var c Copy
			c, err = sp.copyArgs(in)
			img.Copies = append(img.Copies, c)
		case "ENV":
			err = sp.env(in, img)
		case "LABEL":
			err = sp.pairs(in, func(k, v string) {
				if img.Config.Labels == nil {
					img.Config.Labels = map[string]string{}
				}
				img.Config.Labels[k] = v
			})
		case "USER":
			img.Config.User, err = expand(in.Args, sp.vars)
		case "WORKDIR":
			img.Config.WorkingDir, err = expand(in.Args, sp.vars)
		case "EXPOSE":
			err = sp.expose(in, img)
		case "ENTRYPOINT":
			img.Config.Entrypoint, err = execForm(in)
			if cmdFromBase {
				img.Config.Cmd, cmdFromBase = nil, false // Docker: ENTRYPOINT resets the base's CMD
			}
		case "CMD":
			img.Config.Cmd, err = execForm(in)
			cmdFromBase = false
		default:
			err = fmt.Errorf("line %d: %s is not understood by the local builder", in.Line, in.Keyword)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// aptRun reads "apt-get update && apt-get install -y
// --no-install-recommends PKG... && rm -rf /var/lib/apt/lists/*", the only
// RUN the local builder reproduces (with mmdebstrap --include).
func (sp *stagePlan) aptRun(in Instruction, img *ImageSpec) error {
	if img.Debian == nil {
		return fmt.Errorf("line %d: RUN in a scratch stage (there is no shell)", in.Line)
	}
	cmds, err := sp.commands(in)
	if err != nil {
		return err
	}
	for _, c := range cmds {
		line := strings.Join(c, " ")
		switch {
		case line == "apt-get update" || line == "rm -rf /var/lib/apt/lists/*":
		case len(c) > 2 && c[0] == "apt-get" && c[1] == "install":
			yes, norec := false, false
			for _, w := range c[2:] {
				switch {
				case w == "-y" || w == "--yes":
					yes = true
				case w == "--no-install-recommends":
					norec = true
				case strings.HasPrefix(w, "-"):
					return fmt.Errorf("line %d: apt-get option %s is not reproduced by the local builder", in.Line, w)
				default:
					img.Debian.Packages = append(img.Debian.Packages, w)
				}
			}
			if !yes || !norec {
				return fmt.Errorf("line %d: want apt-get install -y --no-install-recommends (the local build installs no Recommends)", in.Line)
			}
		default:
			return fmt.Errorf("line %d: the local builder reproduces apt-get update/install and rm -rf /var/lib/apt/lists/* only, not %q", in.Line, line)
		}
	}
	return nil
}

// copyArgs reads COPY [--from=stage] SRC... DEST (shell or exec form).
func (sp *stagePlan) copyArgs(in Instruction) (Copy, error) {
	c := Copy{Line: in.Line, Text: in.String()}
	for k, v := range in.Flags {
		if k != "from" {
			return c, fmt.Errorf("line %d: COPY --%s is not supported by the local builder", in.Line, k)
		}
		c.From = v
	}
	var words []string
	if strings.HasPrefix(in.Args, "[") {
		if err := json.Unmarshal([]byte(in.Args), &words); err != nil {
			return c, fmt.Errorf("line %d: %w", in.Line, err)
		}
	} else {
		words = strings.Fields(in.Args)
	}
	for i, w := range words {
		var err error
		if words[i], err = expand(w, sp.vars); err != nil {
			return c, fmt.Errorf("line %d: %w", in.Line, err)
		}
	}
	if len(words) < 2 {
		return c, fmt.Errorf("line %d: COPY needs a source and a destination", in.Line)
	}
	c.Sources, c.Dest = words[:len(words)-1], words[len(words)-1]
	if len(c.Sources) > 1 && !strings.HasSuffix(c.Dest, "/") {
		return c, fmt.Errorf("line %d: COPY of several sources needs a destination ending in /", in.Line)
	}
	return c, nil
}

// env reads ENV k=v ... into the config and the stage's variables.
func (sp *stagePlan) env(in Instruction, img *ImageSpec) error {
	return sp.pairs(in, func(k, v string) {
		sp.vars[k] = v
		for i, e := range img.Config.Env {
			if strings.HasPrefix(e, k+"=") {
				img.Config.Env[i] = k + "=" + v
				return
			}
		}
		img.Config.Env = append(img.Config.Env, k+"="+v)
	})
}

// pairs reads the key=value words of ENV and LABEL.
func (sp *stagePlan) pairs(in Instruction, set func(k, v string)) error {
	words, err := splitWords(in.Args)
	if err != nil {
		return fmt.Errorf("line %d: %w", in.Line, err)
	}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "" {
			return fmt.Errorf("line %d: want %s key=value ..., got %q", in.Line, in.Keyword, w)
		}
		if v, err = expand(v, sp.vars); err != nil {
			return fmt.Errorf("line %d: %w", in.Line, err)
		}
		set(k, v)
	}
	return nil
}

func (sp *stagePlan) expose(in Instruction, img *ImageSpec) error {
	for _, p := range strings.Fields(in.Args) {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		if img.Config.ExposedPorts == nil {
			img.Config.ExposedPorts = map[string]struct{}{}
		}
		img.Config.ExposedPorts[p] = struct{}{}
	}
	return nil
}

// execForm reads the JSON (exec) form of ENTRYPOINT and CMD; the shell form
// needs a shell, which the manager's image has not.
func execForm(in Instruction) ([]string, error) {
	var v []string
	if err := json.Unmarshal([]byte(in.Args), &v); err != nil || len(v) == 0 {
		return nil, fmt.Errorf("line %d: %s must use the exec form [\"/path\", ...]", in.Line, in.Keyword)
	}
	return v, nil
}

// checkCopies makes sure every COPY --from names a stage that exists and,
// for the build stage, a binary it builds.
func (p *Plan) checkCopies() error {
	for _, img := range p.Images {
		for _, c := range img.Copies {
			switch src, ok := p.Images[c.From]; {
			case c.From == "":
			case c.From == p.Build.Name:
				for _, s := range c.Sources {
					if _, ok := p.Build.Binaries[s]; !ok {
						return fmt.Errorf("line %d: %s is not built by stage %s", c.Line, s, c.From)
					}
				}
			case !ok:
				return fmt.Errorf("line %d: no stage %q", c.Line, c.From)
			case src.Debian == nil:
				return fmt.Errorf("line %d: copies from scratch stage %q, which the local builder does not build", c.Line, c.From)
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
