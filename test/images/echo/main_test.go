package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, env(map[string]string{"POD_NAME": "web-1"}))
	if err != nil || c.id != "web-1" || fmt.Sprint(c.tcp, c.udp, c.http, c.noHTTP) != "[8080] [8080] 8081 false" {
		t.Errorf("defaults: %+v %v", c, err)
	}
	c, err = parseFlags([]string{"-id=a", "-tcp=80,443", "-udp=", "-http=0"}, env(nil))
	if err != nil || c.id != "a" || len(c.tcp) != 2 || len(c.udp) != 0 || !c.noHTTP {
		t.Errorf("flags: %+v %v", c, err)
	}
	for _, args := range [][]string{{"-tcp=0"}, {"-udp=x"}, {"-tcp=70000"}, {"-http=-1"}, {"-id=two words"}, {"-id="}} {
		if _, err := parseFlags(args, env(nil)); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// A real server on loopback: the replies carry the id and the client's
// address, in the format test/netns parses.
func TestServes(t *testing.T) {
	s, err := start(config{id: "pod-a", tcp: []int{0}, udp: []int{0}, listenIP: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()

	c, err := net.DialTimeout("tcp", s.tcp[0].String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if want := fmt.Sprintf("id=pod-a from=%s\n", c.LocalAddr()); err != nil || line != want {
		t.Errorf("tcp greeting %q %v, want %q", line, err, want)
	}
	fmt.Fprintln(c, "hello")
	if line, err = r.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Errorf("tcp echo %q %v", line, err)
	}

	u, err := net.Dial("udp", s.udp[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_ = u.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := u.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	n, err := u.Read(buf)
	if want := fmt.Sprintf("id=pod-a from=%s msg=hi\n", u.LocalAddr()); err != nil || string(buf[:n]) != want {
		t.Errorf("udp reply %q %v, want %q", buf[:n], err, want)
	}

	for path, want := range map[string]string{"/readyz": "ok\n", "/healthz": "ok\n", "/": "id=pod-a from=127.0.0.1:"} {
		resp, err := http.Get("http://" + s.http.String() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), want) {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, b)
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	var out bytes.Buffer
	go func() { done <- run(ctx, []string{"-id=x", "-tcp=", "-udp=", "-http=0"}, env(nil), &out) }()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if code := run(context.Background(), []string{"-version"}, env(nil), &out); code != 0 || !strings.Contains(out.String(), "echo dev") {
		t.Errorf("-version: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"-tcp=bad"}, env(nil), &out); code != 2 {
		t.Errorf("bad flag: exit %d", code)
	}
}
