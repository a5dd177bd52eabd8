// SPDX-License-Identifier: Apache-2.0

package codecheck_test

import (
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/microsandbox-go/microsandbox"

type pkg struct {
	Dir            string
	ImportPath     string
	Name           string
	GoFiles        []string
	TestGoFiles    []string
	XTestGoFiles   []string
	IgnoredGoFiles []string
	Imports        []string
}

// listPackages runs go list over the whole module, e2e files included.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-tags", "e2e", "-json", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found %d packages; the check would prove nothing", len(pkgs))
	}
	return pkgs
}

func TestFileHeadersAndUnsafe(t *testing.T) {
	for _, p := range listPackages(t) {
		files := append(append(append([]string{}, p.GoFiles...), p.TestGoFiles...), p.XTestGoFiles...)
		for _, name := range files {
			path := filepath.Join(p.Dir, name)
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(name, ".pb.go") {
				continue // generated
			}
			if !bytes.HasPrefix(src, []byte("// SPDX-License-Identifier: Apache-2.0\n")) {
				t.Errorf("%s: first line is not the SPDX line", path)
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			isTest := strings.HasSuffix(name, "_test.go")
			for _, imp := range f.Imports {
				if imp.Path.Value == `"unsafe"` && !isTest && !strings.HasSuffix(name, "_unsafe.go") {
					t.Errorf("%s imports unsafe; move that code to a *_unsafe.go file", path)
				}
			}
		}
	}
}

func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		if len(p.GoFiles) == 0 {
			continue
		}
		want := "// Package " + p.Name + " "
		file := "doc.go"
		if p.Name == "main" {
			want = "// Command " + filepath.Base(p.Dir) + " "
			file = p.GoFiles[0]
		}
		found := false
		for _, name := range p.GoFiles {
			src, _ := os.ReadFile(filepath.Join(p.Dir, name))
			if bytes.Contains(src, []byte("\n"+want)) {
				found = name == file || p.Name == "main"
			}
		}
		if !found {
			t.Errorf("%s: no %q doc comment in %s", p.ImportPath, strings.TrimSpace(want), file)
		}
	}
}

// leaves are the packages under pkg/ that must not import each other.
var leaves = []string{"pkg/vmm", "pkg/netstack", "pkg/oci", "pkg/rootfs", "pkg/guestagent"}

func area(importPath string) string {
	rel := strings.TrimPrefix(strings.TrimPrefix(importPath, module), "/")
	for _, l := range append(leaves, "pkg/sandbox") {
		if rel == l || strings.HasPrefix(rel, l+"/") {
			return l
		}
	}
	if rel == "" {
		return "root"
	}
	return rel
}

func TestImportDirection(t *testing.T) {
	onlyIn := map[string]string{
		"github.com/containers/image/": "pkg/oci",
		"go.podman.io/image/":          "pkg/oci",
		"gvisor.dev/gvisor/":           "pkg/netstack",
	}
	for _, p := range listPackages(t) {
		from := area(p.ImportPath)
		for _, imp := range p.Imports {
			for prefix, owner := range onlyIn {
				if strings.HasPrefix(imp, prefix) && from != owner {
					t.Errorf("%s imports %s; only %s may", p.ImportPath, imp, owner)
				}
			}
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := area(imp)
			if to == from {
				continue
			}
			isLeaf := func(a string) bool {
				for _, l := range leaves {
					if a == l {
						return true
					}
				}
				return false
			}
			switch {
			case isLeaf(from) && (isLeaf(to) || to == "pkg/sandbox" || to == "root"):
				t.Errorf("%s (%s) imports %s (%s): leaf packages import no other pkg/ area", p.ImportPath, from, imp, to)
			case from == "pkg/sandbox" && to == "root":
				t.Errorf("%s imports the root package: pkg/sandbox sits below the SDK", p.ImportPath)
			}
		}
	}
}
