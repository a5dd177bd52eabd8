// SPDX-License-Identifier: Apache-2.0

//go:build !linux

package rootfs_test

import "testing"

func checkMount(t *testing.T, _ []byte, _ *model) {
	t.Skip("loop-mounting EROFS needs Linux")
}
