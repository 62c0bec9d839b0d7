// Package gitops runs the health checks of the GitOps tools on objects of
// proxy.synterix.io, as the tools themselves compute them: kstatus
// (sigs.k8s.io/cli-utils status.Compute, which Flux and kubectl-style waits
// use) and Argo CD's Lua health checks from config/argocd, run in
// gopher-lua, Argo CD's Lua runtime, with the libraries Argo CD opens.
//
// States lists, for each state of each kind, what both tools must say. The
// operator suite (controllers) produces those states with the real operator
// and checks them; this package's tests produce the agent's states with the
// agent's real status builder, and check that docs/operator.md shows the
// table as it is here.
package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// Root returns the repository's root directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Kstatus returns kstatus's status and message for u, as status.Compute
// computes them.
func Kstatus(u *unstructured.Unstructured) (string, string, error) {
	res, err := status.Compute(u)
	if err != nil {
		return "", "", err
	}
	return res.Status.String(), res.Message, nil
}

// Health is an Argo CD health assessment.
type Health struct {
	Status  string
	Message string
}

// argoStatuses are the health statuses Argo CD accepts from a Lua check;
// it turns anything else into Unknown.
var argoStatuses = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true}

// ScriptPath is the Lua health check of a kind in config/argocd.
func ScriptPath(kind string) string {
	return filepath.Join(Root(), "config", "argocd", "health", strings.ToLower(kind)+".lua")
}

// ArgoHealth runs the Lua health check of u's kind from config/argocd the
// way Argo CD runs one: a fresh state with only the package, base and table
// libraries, the object as the global obj, a one-second deadline, and the
// returned table's status and message.
func ArgoHealth(u *unstructured.Unstructured) (Health, error) {
	script, err := os.ReadFile(ScriptPath(u.GetKind()))
	if err != nil {
		return Health{}, err
	}
	return RunLua(string(script), u.Object)
}

// RunLua runs a health script on an object.
func RunLua(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	tbl, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	h := Health{Status: lua.LVAsString(tbl.RawGetString("status")), Message: lua.LVAsString(tbl.RawGetString("message"))}
	if !argoStatuses[h.Status] {
		return h, fmt.Errorf("the script returned status %q, which Argo CD turns into Unknown", h.Status)
	}
	return h, nil
}

// toLua converts a JSON value, as unstructured holds it, to a Lua value:
// objects and arrays become tables (arrays indexed from 1), numbers Lua
// numbers.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	}
	return lua.LNil
}
