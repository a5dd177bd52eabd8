// SPDX-License-Identifier: Apache-2.0

package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Install copies the runtime's files (rt.Kernel, rt.Agent, rt.Binary) into
// Home's bin directory, where DefaultRuntime finds them for any program
// that embeds the SDK. Files already there and identical in size and
// modification time are kept. It returns the installed runtime.
func Install(rt Runtime) (Runtime, error) {
	rt.abs()
	if err := rt.Check(); err != nil {
		return rt, err
	}
	dir := rt.binDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return rt, fmt.Errorf("sandbox: install: %w", err)
	}
	out := rt
	for _, f := range []struct {
		src  string
		name string
		dst  *string
	}{
		{rt.Kernel, KernelName, &out.Kernel},
		{rt.Agent, AgentName, &out.Agent},
		{rt.Binary, BinaryName, &out.Binary},
	} {
		dst := filepath.Join(dir, f.name)
		if err := installFile(f.src, dst); err != nil {
			return rt, fmt.Errorf("sandbox: install %s: %w", f.name, err)
		}
		*f.dst = dst
	}
	return out, nil
}

func installFile(src, dst string) error {
	if src == dst {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	si, err := in.Stat()
	if err != nil {
		return err
	}
	if di, err := os.Stat(dst); err == nil && di.Size() == si.Size() && di.ModTime().Equal(si.ModTime()) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, in)
	err = errors.Join(err, tmp.Chmod(0o755), tmp.Close())
	if err == nil {
		err = os.Chtimes(tmp.Name(), si.ModTime(), si.ModTime())
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
