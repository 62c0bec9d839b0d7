package main

import (
	"reflect"
	"strings"
	"testing"
)

const sampleDockerfile = `# syntax=docker/dockerfile:1
ARG GO_IMAGE=golang:1.26-bookworm
ARG DEB=debian:bookworm-slim@sha256:0123
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
    # a comment inside a continuation
    -ldflags "-s -w -X main.version=${VERSION}" -o /out/agent ./cmd/agent
FROM $DEB AS agent
ARG VERSION
RUN apt-get update && apt-get install -y --no-install-recommends iptables ipset && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/agent /agent
ENV A=1 B="two words"
LABEL v="${VERSION}"
EXPOSE 10256 53/udp
USER 0:0
ENTRYPOINT ["/agent"]
`

func plan(t *testing.T, dockerfile string, args map[string]string) *Plan {
	t.Helper()
	d, err := ParseDockerfile(strings.NewReader(dockerfile))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(d, args)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanReadsTheDockerfile(t *testing.T) {
	p := plan(t, sampleDockerfile, map[string]string{"VERSION": "v1"})
	if p.Build.Name != "build" || p.Build.Image != "golang:1.26-bookworm" {
		t.Errorf("build stage: %+v", p.Build)
	}
	if !reflect.DeepEqual(p.Build.Sources, []string{"go.mod", "go.sum", "cmd/"}) {
		t.Errorf("sources: %v", p.Build.Sources)
	}
	want := GoBuild{Line: 10, Env: []string{"CGO_ENABLED=0"}, Flags: []string{"-trimpath", "-ldflags", "-s -w -X main.version=v1"},
		Out: "/out/agent", Package: "./cmd/agent"}
	if got := p.Build.Binaries["/out/agent"]; !reflect.DeepEqual(got, want) {
		t.Errorf("go build:\n got %+v\nwant %+v", got, want)
	}
	a := p.Images["agent"]
	if a.Debian == nil || a.Debian.Suite != "bookworm" || a.Debian.Image != "debian:bookworm-slim@sha256:0123" ||
		!reflect.DeepEqual(a.Debian.Packages, []string{"iptables", "ipset"}) {
		t.Errorf("debian base: %+v", a.Debian)
	}
	c := a.Config
	if c.User != "0:0" || !reflect.DeepEqual(c.Entrypoint, []string{"/agent"}) {
		t.Errorf("user %q entrypoint %v", c.User, c.Entrypoint)
	}
	if c.Cmd != nil {
		t.Errorf("ENTRYPOINT did not reset the base's CMD: %v", c.Cmd)
	}
	if !reflect.DeepEqual(c.Env, []string{"PATH=" + DefaultPath, "A=1", "B=two words"}) {
		t.Errorf("env: %v", c.Env)
	}
	if c.Labels["v"] != "v1" {
		t.Errorf("labels: %v", c.Labels)
	}
	if _, ok := c.ExposedPorts["10256/tcp"]; !ok || len(c.ExposedPorts) != 2 {
		t.Errorf("ports: %v", c.ExposedPorts)
	}
	if len(a.Copies) != 1 || a.Copies[0].From != "build" || a.Copies[0].Dest != "/agent" {
		t.Errorf("copies: %+v", a.Copies)
	}
}

func TestPlanDefaultsWithoutBuildArgs(t *testing.T) {
	p := plan(t, sampleDockerfile, nil)
	if got := p.Build.Binaries["/out/agent"].Flags[2]; got != "-s -w -X main.version=dev" {
		t.Errorf("ldflags: %q", got)
	}
	// As in Docker: an ARG without default takes the global ARG of that
	// name, and there is none; the build stage's default is its own.
	if l, ok := p.Images["agent"].Config.Labels["v"]; !ok || l != "" {
		t.Errorf("ARG VERSION without default and no global: %v", p.Images["agent"].Config.Labels)
	}
}

// Every instruction the local builder cannot reproduce is an error that
// names the line, so the Dockerfile cannot drift silently.
func TestPlanRejectsWhatItCannotReproduce(t *testing.T) {
	base := "FROM golang:1.26 AS build\nRUN go build -o /out/a ./cmd/a\n"
	for name, df := range map[string]string{
		"unknown base":        base + "FROM alpine:3 AS x\n",
		"debian not slim":     base + "FROM debian:bookworm AS x\n",
		"unnamed stage":       base + "FROM scratch\n",
		"recommends":          base + "FROM debian:bookworm-slim AS x\nRUN apt-get install -y curl\n",
		"other apt option":    base + "FROM debian:bookworm-slim AS x\nRUN apt-get install -y --no-install-recommends -t sid curl\n",
		"other command":       base + "FROM debian:bookworm-slim AS x\nRUN useradd x\n",
		"pipe":                base + "FROM debian:bookworm-slim AS x\nRUN apt-get update | cat\n",
		"run in scratch":      base + "FROM scratch AS x\nRUN true\n",
		"shell entrypoint":    base + "FROM scratch AS x\nENTRYPOINT /a\n",
		"copy chown":          base + "FROM scratch AS x\nCOPY --chown=1 a /a\n",
		"undeclared variable": base + "FROM scratch AS x\nLABEL v=${VERSION}\n",
		"unknown instruction": base + "FROM scratch AS x\nHEALTHCHECK NONE\n",
		"copy of unbuilt":     base + "FROM scratch AS x\nCOPY --from=build /out/b /b\n",
		"copy from nowhere":   base + "FROM scratch AS x\nCOPY --from=nope /a /a\n",
		"other go command":    "FROM golang:1.26 AS build\nRUN go generate ./...\n",
		"no binary":           "FROM golang:1.26 AS build\nRUN go mod download\n",
		"two go stages":       base + "FROM golang:1.26 AS b2\nRUN go build -o /out/b ./cmd/b\n",
	} {
		d, err := ParseDockerfile(strings.NewReader(df))
		if err == nil {
			_, err = NewPlan(d, nil)
		}
		if err == nil {
			t.Errorf("%s: no error", name)
		} else if !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: error does not name the line: %v", name, err)
		}
	}
}

func TestParseDockerfileSyntaxErrors(t *testing.T) {
	for name, df := range map[string]string{
		"empty":              "# nothing\n",
		"before from":        "RUN true\nFROM scratch AS x\n",
		"open continuation":  "FROM scratch AS x\nLABEL a=b \\\n",
		"duplicate stage":    "FROM scratch AS x\nFROM scratch AS x\n",
		"flag without value": "FROM scratch AS x\nCOPY --from a b\n",
		"bad from":           "FROM a b c d\n",
	} {
		if _, err := ParseDockerfile(strings.NewReader(df)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestSplitWords(t *testing.T) {
	got, err := splitWords(`A=1 go build -ldflags "-s -w" 'x y' a\ b&&rm -rf /x;true`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"A=1", "go", "build", "-ldflags", "-s -w", "x y", "a b", "&&", "rm", "-rf", "/x", ";", "true"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
	if cmds := splitCommands(got); len(cmds) != 3 || cmds[1][0] != "rm" {
		t.Errorf("commands: %q", cmds)
	}
	if _, err := splitWords(`echo "open`); err == nil {
		t.Error("unterminated quote: no error")
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B_2": "two"}
	for in, want := range map[string]string{"x$A": "x1", "${B_2}y": "twoy", "$A$B_2": "1two", "cost $": "cost $", "a$-b": "a$-b"} {
		if got, err := expand(in, vars); err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := expand("${NOPE}", vars); err == nil {
		t.Error("undeclared variable: no error")
	}
}

func TestStageKind(t *testing.T) {
	for image, want := range map[string][2]string{
		"golang:1.26-bookworm":                                 {"go", ""},
		"docker.io/library/golang:1.26@sha256:ab":              {"go", ""},
		"debian:trixie-slim":                                   {"debian", "trixie"},
		"registry.example:5000/debian:bookworm-slim@sha256:cd": {"debian", "bookworm"},
		"scratch": {"scratch", ""},
	} {
		kind, suite, err := stageKind(image)
		if err != nil || kind != want[0] || suite != want[1] {
			t.Errorf("%s: %s %s %v", image, kind, suite, err)
		}
	}
}

func TestAgentRefAndFullRef(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/synterix/synterix-kube-proxy:v1":     "ghcr.io/synterix/synterix-kube-proxy-agent:v1",
		"localhost:5000/skp:abc@sha256:" + sha64("0"): "localhost:5000/skp-agent:abc",
	} {
		if got, err := AgentRef(in); err != nil || got != want {
			t.Errorf("AgentRef(%s) = %s, %v", in, got, err)
		}
	}
	if _, err := AgentRef("localhost:5000/skp"); err == nil {
		t.Error("AgentRef without tag: no error")
	}
	for in, want := range map[string]string{
		"skp:v1":                       "docker.io/library/skp:v1",
		"me/skp:v1":                    "docker.io/me/skp:v1",
		"localhost/synterix/pause:t":   "localhost/synterix/pause:t",
		"reg.example:5000/a/b:c":       "reg.example:5000/a/b:c",
		"ghcr.io/synterix/skp-agent:x": "ghcr.io/synterix/skp-agent:x",
	} {
		if got, _, err := fullRef(in); err != nil || got != want {
			t.Errorf("fullRef(%s) = %s, %v", in, got, err)
		}
	}
	for _, bad := range []string{"skp", "Skp:UPPER repo", "skp@sha256:" + sha64("1")} {
		if _, _, err := fullRef(bad); err == nil {
			t.Errorf("fullRef(%s): no error", bad)
		}
	}
}

func sha64(c string) string { return strings.Repeat(c, 64) }
