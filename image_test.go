// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/microsandbox-go/microsandbox/internal/testimages"
)

// TestImages pulls the local busybox layout through the SDK and lists,
// inspects, removes and prunes it.
func TestImages(t *testing.T) {
	ctx := context.Background()
	l, err := testimages.Busybox(ctx)
	if err != nil {
		t.Skipf("busybox test image: %v", err)
	}
	home := t.TempDir()
	t.Setenv("MSB_HOME", home)
	var reports atomic.Int64
	d, err := Image.Pull(ctx, l.Ref("busybox"), WithPullProgress(func(PullProgress) { reports.Add(1) }))
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if d.Digest == "" || d.Layers == 0 || reports.Load() == 0 {
		t.Errorf("Pull = %+v after %d progress reports", d, reports.Load())
	}
	// The root filesystem was built with the pull.
	if _, err := os.Stat(filepath.Join(home, "rootfs", d.Digest[len("sha256:"):]+".erofs")); err != nil {
		t.Errorf("root filesystem after Pull: %v", err)
	}
	list, err := Image.List(ctx)
	if err != nil || len(list) != 1 || list[0].Digest != d.Digest {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if _, err := Image.Inspect(ctx, "oci:/nowhere:x"); !IsKind(err, ErrImageNotFound) {
		t.Errorf("Inspect(missing) = %v, want ErrImageNotFound", err)
	}
	if err := Image.Remove(ctx, d.Digest, false); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if list, _ := Image.List(ctx); len(list) != 0 {
		t.Errorf("List after Remove = %+v", list)
	}
	if _, err := os.Stat(filepath.Join(home, "rootfs", d.Digest[len("sha256:"):]+".erofs")); !os.IsNotExist(err) {
		t.Errorf("root filesystem after Remove: %v", err)
	}
	if _, err := Image.Prune(ctx); err != nil {
		t.Errorf("Prune: %v", err)
	}
}
