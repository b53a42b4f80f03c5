// argocd-health runs an Argo CD resource health script the way Argo CD's application controller
// does (argo-cd util/lua/lua.go, VM.runLua + ExecuteHealthLua), so the chart's health.lua is tested
// in the same Lua VM (gopher-lua) with the same globals and libraries:
//
//   - a state with SkipOpenLibs, then only the package, base and table libraries and Argo CD's
//     "safe os" (time and date; Argo CD registers it under the table module's name, so the global
//     `os` stays nil and `require("os")` is the way in). No string, math, io or debug library:
//     that is what a script installed through argocd-cm gets unless
//     resource.customizations.useOpenLibs.<group_kind> is "true" (-open-libs here);
//   - the live object, converted from its JSON the way Argo CD converts an unstructured object,
//     as the global `obj`;
//   - a one-second deadline;
//   - the returned table encoded to {"status", "message"}; a status Argo CD does not know becomes
//     Unknown with Argo CD's message.
//
// Usage: argocd-health [-open-libs] SCRIPT.lua < object.json   (prints the result as JSON)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

type healthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

var validStatuses = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

func main() {
	openLibs := flag.Bool("open-libs", false, "open every standard library (argocd-cm useOpenLibs: true)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: argocd-health [-open-libs] SCRIPT.lua < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fail("reading the health script: %v", err)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading the object from stdin: %v", err)
	}
	object, err := decodeObject(raw)
	if err != nil {
		fail("the object on stdin is not a JSON object: %v", err)
	}
	result, err := run(string(script), object, *openLibs)
	if err != nil {
		// Argo CD shows the resource's health as Unknown with this error.
		fail("health script error: %v", err)
	}
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argocd-health: "+format+"\n", args...)
	os.Exit(1)
}

// decodeObject gives the same Go values as an unstructured.Unstructured read from the API server:
// integers as int64, other numbers as float64.
func decodeObject(raw []byte) (map[string]any, error) {
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var object map[string]any
	if err := decoder.Decode(&object); err != nil {
		return nil, err
	}
	return normalise(object).(map[string]any), nil
}

func normalise(value any) any {
	switch v := value.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case []any:
		for i := range v {
			v[i] = normalise(v[i])
		}
	case map[string]any:
		for k := range v {
			v[k] = normalise(v[k])
		}
	}
	return value
}

func run(script string, object map[string]any, openLibs bool) (*healthStatus, error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	defer L.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := L.CallByParam(lua.P{Fn: L.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	L.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	L.SetContext(ctx)
	L.SetGlobal("obj", toLua(L, object))
	if err := L.DoString(script); err != nil {
		return nil, err
	}
	returned := L.Get(-1)
	table, ok := returned.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", returned.Type().String())
	}
	result := &healthStatus{}
	if s, ok := table.RawGetString("status").(lua.LString); ok {
		result.Status = string(s)
	}
	if m, ok := table.RawGetString("message").(lua.LString); ok {
		result.Message = string(m)
	}
	if !validStatuses[result.Status] {
		return &healthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return result, nil
}

// toLua converts like Argo CD's decodeValue: maps to hash tables, lists to arrays, numbers to
// LNumber, and anything else to nil.
func toLua(L *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		array := L.CreateTable(len(v), 0)
		for _, item := range v {
			array.Append(toLua(L, item))
		}
		return array
	case map[string]any:
		table := L.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(L, item))
		}
		return table
	}
	return lua.LNil
}

// Argo CD's safe os library: only time() and date(), nothing that exits or touches files. date()
// here ignores its format (RFC 3339, UTC): enough to tell a script that calls it from one that
// calls a function Argo CD does not provide.
var safeOsFuncs = map[string]lua.LGFunction{
	"time": func(L *lua.LState) int { L.Push(lua.LNumber(time.Now().Unix())); return 1 },
	"date": func(L *lua.LState) int { L.Push(lua.LString(time.Now().UTC().Format(time.RFC3339))); return 1 },
}

func openSafeOs(L *lua.LState) int {
	// Argo CD registers these under lua.TabLibName, not lua.OsLibName: the global `os` stays nil.
	L.Push(L.RegisterModule(lua.TabLibName, safeOsFuncs))
	return 1
}

func safeOsLoader(L *lua.LState) int {
	L.Push(L.SetFuncs(L.NewTable(), safeOsFuncs))
	return 1
}
