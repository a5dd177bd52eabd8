// SPDX-License-Identifier: Apache-2.0

package bootcfg

import (
	"fmt"
	"io"
	"strings"

	"github.com/microsandbox-go/microsandbox/internal/cpio"
)

// WriteInitramfs writes a per-sandbox initramfs (newc cpio, uncompressed) to
// w: /init is the agent (agentSize bytes read from agent), /dev/console
// lets the kernel give it the console as stdin, stdout and stderr, and Path
// holds c, which must validate.
func WriteInitramfs(w io.Writer, agent io.Reader, agentSize int64, c *Config) error {
	data, err := Marshal(c)
	if err != nil {
		return err
	}
	a := cpio.NewWriter(w)
	dir := strings.TrimPrefix(Path[:strings.LastIndexByte(Path, '/')], "/")
	for _, step := range []func() error{
		func() error { return a.Dir("dev", 0o755) },
		// 5:1 is /dev/console (Documentation/admin-guide/devices.txt).
		func() error { return a.CharDevice("dev/console", 0o600, 5, 1) },
		func() error { return a.Dir(dir, 0o700) },
		func() error { return a.File(strings.TrimPrefix(Path, "/"), 0o600, data) },
		func() error { return a.FileFrom("init", 0o755, agentSize, agent) },
		a.Close,
	} {
		if err := step(); err != nil {
			return fmt.Errorf("bootcfg: write initramfs: %w", err)
		}
	}
	return nil
}
