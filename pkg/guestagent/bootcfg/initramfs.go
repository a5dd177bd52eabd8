// SPDX-License-Identifier: Apache-2.0

package bootcfg

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/microsandbox-go/microsandbox/internal/cpio"
)

// WriteInitramfs writes a per-sandbox initramfs (newc cpio, uncompressed) to
// w: /init is the agent (agentSize bytes read from agent), /dev/console
// lets the kernel give it the console as stdin, stdout and stderr, Path
// holds c, which must validate, and PatchDir holds the Content of c's write
// and append patches, each named by the Data it assigns (c itself is not
// changed).
func WriteInitramfs(w io.Writer, agent io.Reader, agentSize int64, c *Config) error {
	v := *c
	v.Patches = slices.Clone(c.Patches)
	var payloads []Patch
	for i := range v.Patches {
		if p := &v.Patches[i]; p.Op == PatchWrite || p.Op == PatchAppend {
			p.Data = strconv.Itoa(i)
			payloads = append(payloads, *p)
		}
	}
	data, err := Marshal(&v)
	if err != nil {
		return err
	}
	a := cpio.NewWriter(w)
	dir := strings.TrimPrefix(Path[:strings.LastIndexByte(Path, '/')], "/")
	steps := []func() error{
		func() error { return a.Dir("dev", 0o755) },
		// 5:1 is /dev/console (Documentation/admin-guide/devices.txt).
		func() error { return a.CharDevice("dev/console", 0o600, 5, 1) },
		func() error { return a.Dir(dir, 0o700) },
		func() error { return a.File(strings.TrimPrefix(Path, "/"), 0o600, data) },
	}
	if len(payloads) > 0 {
		pdir := strings.TrimPrefix(PatchDir, "/")
		steps = append(steps, func() error { return a.Dir(pdir, 0o700) })
		for _, p := range payloads {
			steps = append(steps, func() error { return a.File(pdir+"/"+p.Data, 0o600, p.Content) })
		}
	}
	steps = append(steps,
		func() error { return a.FileFrom("init", 0o755, agentSize, agent) },
		a.Close)
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("bootcfg: write initramfs: %w", err)
		}
	}
	return nil
}
