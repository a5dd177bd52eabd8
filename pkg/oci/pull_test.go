// SPDX-License-Identifier: Apache-2.0

package oci_test

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/microsandbox-go/microsandbox/internal/testimages"
	"github.com/microsandbox-go/microsandbox/pkg/oci"
	"github.com/microsandbox-go/microsandbox/pkg/oci/ocitest"
)

// setup builds the layered test layout, starts a registry and pushes
// "layered" as test/layered:v1 and "multiarch" as test/multi:v1.
func setup(t *testing.T, opts ocitest.Options) (*ocitest.Registry, testimages.Layout) {
	t.Helper()
	ctx := context.Background()
	l, err := testimages.Layered(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg := ocitest.NewRegistry(t, opts)
	if err := reg.Push(ctx, l.Dir, "layered", "test/layered", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Push(ctx, l.Dir, "multiarch", "test/multi", "v1"); err != nil {
		t.Fatal(err)
	}
	return reg, l
}

// newStore opens a store in a temporary directory with an empty
// registries.conf, so that the host's configuration plays no part.
func newStore(t *testing.T) *oci.Store {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "registries.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := oci.New(oci.Config{Dir: filepath.Join(dir, "store"), RegistriesConfPath: conf})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// isolateHome keeps the developer's auth files out of the test.
func isolateHome(t *testing.T) {
	// Keep the test image cache where it was.
	if c, err := os.UserCacheDir(); err == nil {
		t.Setenv("XDG_CACHE_HOME", c)
	}
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("DOCKER_CONFIG", t.TempDir())
}

var amd64 = oci.Platform{OS: "linux", Architecture: "amd64"}

func readLayerFiles(t *testing.T, im oci.Image) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, l := range im.Layers() {
		rc, err := l.Uncompressed(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				b, _ := io.ReadAll(tr)
				files[h.Name] = string(b)
			}
		}
		io.Copy(io.Discard, rc)
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func TestPullAnonymous(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{})
	s := newStore(t)
	ctx := context.Background()
	var progress []oci.Progress
	im, err := s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{
		Insecure: true, Platform: amd64,
		Progress: func(p oci.Progress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatalf("Pull = %v", err)
	}
	if got, want := im.Reference(), reg.Ref("test/layered", "v1"); got != want {
		t.Errorf("Reference() = %q, want %q", got, want)
	}
	cfg := im.Config()
	if !slices.Equal(cfg.Entrypoint, []string{"/bin/tool"}) || !slices.Equal(cfg.Cmd, []string{"--flag"}) ||
		cfg.WorkingDir != "/home/user" || cfg.User != "1000:1000" || !slices.Contains(cfg.Env, "LAYERED=1") {
		t.Errorf("Config() = %+v", cfg)
	}
	if len(im.Layers()) != 3 {
		t.Fatalf("len(Layers()) = %d, want 3", len(im.Layers()))
	}
	files := readLayerFiles(t, im)
	if files["etc/config"] != "top config\n" {
		t.Errorf("top layer etc/config = %q", files["etc/config"])
	}
	// Progress: every layer reported complete.
	done := map[int]bool{}
	for _, p := range progress {
		if p.Done > p.Total || p.Count != 3 {
			t.Errorf("bad progress %+v", p)
		}
		if p.Done == p.Total {
			done[p.Index] = true
		}
	}
	if len(done) != 3 {
		t.Errorf("progress completed layers %v, want 0..2", done)
	}

	// Second pull: cache hit with no request at all.
	before := reg.Requests()
	im2, err := s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{Insecure: true, Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.Requests() - before; n != 0 {
		t.Errorf("second pull made %d requests, want 0", n)
	}
	if im2.Digest() != im.Digest() {
		t.Errorf("second pull digest %s, want %s", im2.Digest(), im.Digest())
	}
	// PullAlways: manifest again, no blob.
	blobs := reg.Count("GET", "blob")
	if _, err := s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{Insecure: true, Platform: amd64, Policy: oci.PullAlways}); err != nil {
		t.Fatal(err)
	}
	if n := reg.Count("GET", "blob") - blobs; n != 0 {
		t.Errorf("PullAlways fetched %d blobs again, want 0", n)
	}
	// By digest.
	byDigest := reg.Host + "/test/layered@" + string(im.Digest())
	if im3, err := s.Pull(ctx, byDigest, oci.PullOptions{Insecure: true, Platform: amd64}); err != nil || im3.Digest() != im.Digest() {
		t.Errorf("Pull(%s) = %v, %v", byDigest, im3, err)
	}
}

func TestPullPlatform(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{})
	s := newStore(t)
	ctx := context.Background()
	for _, arch := range []string{"amd64", "arm64"} {
		p := oci.Platform{OS: "linux", Architecture: arch}
		im, err := s.Pull(ctx, reg.Ref("test/multi", "v1"), oci.PullOptions{Insecure: true, Platform: p})
		if err != nil {
			t.Fatalf("Pull(%s) = %v", arch, err)
		}
		if got := readLayerFiles(t, im)["arch"]; got != arch+"\n" {
			t.Errorf("Pull(%s): /arch = %q", arch, got)
		}
		if im.Platform().Architecture != arch {
			t.Errorf("Pull(%s).Platform() = %v", arch, im.Platform())
		}
	}
	_, err := s.Pull(ctx, reg.Ref("test/multi", "v1"), oci.PullOptions{Insecure: true, Platform: oci.Platform{OS: "linux", Architecture: "riscv64"}})
	if !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Pull(riscv64) = %v, want ErrNotFound", err)
	}
	_, err = s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{Insecure: true, Platform: oci.Platform{OS: "linux", Architecture: "arm64"}})
	if !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Pull(single amd64 image for arm64) = %v, want ErrNotFound", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List = %v, %v; want 2 entries", list, err)
	}
}

func TestPullErrors(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{})
	s := newStore(t)
	ctx := context.Background()
	_, err := s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{Policy: oci.PullNever})
	if !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Pull(never, empty cache) = %v, want ErrNotFound", err)
	}
	_, err = s.Pull(ctx, reg.Ref("test/layered", "nosuchtag"), oci.PullOptions{Insecure: true})
	if !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Pull(missing tag) = %v, want ErrNotFound", err)
	}
	_, err = s.Pull(ctx, "UPPER/case", oci.PullOptions{})
	if !errors.Is(err, oci.ErrInvalidReference) {
		t.Errorf("Pull(bad ref) = %v, want ErrInvalidReference", err)
	}
	// Plain HTTP without Insecure is refused.
	_, err = s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{})
	if err == nil {
		t.Errorf("Pull over HTTP without Insecure succeeded")
	}
}

func TestPullNeverAfterPull(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{})
	s := newStore(t)
	ctx := context.Background()
	if _, err := s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	before := reg.Requests()
	if _, err := s.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{Policy: oci.PullNever}); err != nil {
		t.Errorf("Pull(never) after pull = %v", err)
	}
	if reg.Requests() != before {
		t.Errorf("Pull(never) made requests")
	}
}

func TestPullAuth(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{Username: "alice", Password: "s3cret"})
	ctx := context.Background()
	ref := reg.Ref("test/layered", "v1")
	tests := []struct {
		name string
		opts oci.PullOptions
		ok   bool
	}{
		{"anonymous", oci.PullOptions{}, false},
		{"wrong password", oci.PullOptions{Credentials: &oci.Credentials{Username: "alice", Password: "nope"}}, false},
		{"credentials", oci.PullOptions{Credentials: &oci.Credentials{Username: "alice", Password: "s3cret"}}, true},
		{"auth file", oci.PullOptions{AuthFile: writeAuthFile(t, reg.Host, "alice", "s3cret")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Insecure = true
			_, err := newStore(t).Pull(ctx, ref, tt.opts)
			if tt.ok && err != nil {
				t.Fatalf("Pull = %v", err)
			}
			if !tt.ok && !errors.Is(err, oci.ErrUnauthorized) {
				t.Fatalf("Pull = %v, want ErrUnauthorized", err)
			}
		})
	}
}

func writeAuthFile(t *testing.T, host, user, pass string) string {
	p := filepath.Join(t.TempDir(), "auth.json")
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	if err := os.WriteFile(p, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, host, auth), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPullTLS(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{TLS: true})
	ctx := context.Background()
	ref := reg.Ref("test/layered", "v1")
	if _, err := newStore(t).Pull(ctx, ref, oci.PullOptions{}); err == nil {
		t.Error("Pull without the CA succeeded")
	}
	if _, err := newStore(t).Pull(ctx, ref, oci.PullOptions{CACertificates: reg.CACert}); err != nil {
		t.Errorf("Pull with CA = %v", err)
	}
	if _, err := newStore(t).Pull(ctx, ref, oci.PullOptions{Insecure: true}); err != nil {
		t.Errorf("Pull insecure = %v", err)
	}
	if _, err := newStore(t).Pull(ctx, ref, oci.PullOptions{CACertificates: []byte("junk")}); err == nil {
		t.Error("Pull with junk CA succeeded")
	}
}

func TestParallelPullsPullOnce(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{})
	s := newStore(t)
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	digests := make([]oci.Digest, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			// Each goroutine its own Store on the same dir, as separate
			// processes would.
			st, err := oci.New(oci.Config{Dir: s.Dir()})
			if err != nil {
				errs[i] = err
				return
			}
			im, err := st.Pull(ctx, reg.Ref("test/layered", "v1"), oci.PullOptions{Insecure: true, Platform: amd64})
			errs[i] = err
			if err == nil {
				digests[i] = im.Digest()
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Fatalf("pull %d = %s, %v", i, digests[i], errs[i])
		}
	}
	// 3 layers + 1 config, each fetched once.
	if got := reg.Count("GET", "blob"); got != 4 {
		t.Errorf("blob GETs = %d, want 4", got)
	}
}

func TestLayoutRefs(t *testing.T) {
	isolateHome(t)
	l, err := testimages.Layered(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	ctx := context.Background()
	im, err := s.Pull(ctx, l.Ref("layered"), oci.PullOptions{Platform: amd64})
	if err != nil {
		t.Fatalf("Pull(%s) = %v", l.Ref("layered"), err)
	}
	if got := readLayerFiles(t, im)["opaque/new"]; got != "after opaque\n" {
		t.Errorf("opaque/new = %q", got)
	}
	im, err = s.Pull(ctx, l.Ref("multiarch"), oci.PullOptions{Platform: oci.Platform{OS: "linux", Architecture: "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := readLayerFiles(t, im)["arch"]; got != "arm64\n" {
		t.Errorf("arch = %q", got)
	}
	// The same layout as an oci-archive.
	archive := filepath.Join(t.TempDir(), "layout.tar")
	if out, err := exec.Command("tar", "-cf", archive, "-C", l.Dir, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if _, err := s.Pull(ctx, "oci-archive:"+archive+":layered", oci.PullOptions{Platform: amd64}); err != nil {
		t.Errorf("Pull(oci-archive) = %v", err)
	}
	if _, err := s.Pull(ctx, l.Ref("nosuch"), oci.PullOptions{}); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Pull(missing name) = %v, want ErrNotFound", err)
	}
}

func TestStoreIsLayout(t *testing.T) {
	isolateHome(t)
	reg, _ := setup(t, ocitest.Options{})
	s := newStore(t)
	ctx := context.Background()
	ref := reg.Ref("test/layered", "v1")
	im, err := s.Pull(ctx, ref, oci.PullOptions{Insecure: true, Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	// The store is itself an OCI layout: pull from it into another store.
	im2, err := newStore(t).Pull(ctx, "oci:"+s.Dir()+":"+ref, oci.PullOptions{Platform: amd64})
	if err != nil {
		t.Fatalf("Pull from store as layout = %v", err)
	}
	if im2.Digest() != im.Digest() {
		t.Errorf("digest %s, want %s", im2.Digest(), im.Digest())
	}
}

func TestRemoveInUseAndPrune(t *testing.T) {
	isolateHome(t)
	l, err := testimages.Layered(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	ctx := context.Background()
	a, err := s.Pull(ctx, l.Ref("layered"), oci.PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Pull(ctx, l.Ref("multiarch"), oci.PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Acquire(ctx, a.Digest(), "sandbox-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Acquire(ctx, oci.FromBytes([]byte("x")), "sandbox-1"); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Acquire(unknown) = %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, l.Ref("layered"), false); !errors.Is(err, oci.ErrInUse) {
		t.Errorf("Remove(in use) = %v, want ErrInUse", err)
	}
	if h, _ := s.Holders(ctx, a.Digest()); !slices.Equal(h, []string{"sandbox-1"}) {
		t.Errorf("Holders = %v", h)
	}
	// Prune removes only the unused image.
	rep, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.ImagesRemoved != 1 || rep.BlobsRemoved != 3 || rep.BytesReclaimed == 0 {
		t.Errorf("Prune = %+v, want 1 image, 3 blobs (manifest, config, layer)", rep)
	}
	if _, err := s.Get(ctx, string(b.Digest()), oci.Platform{}); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Get(pruned) = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, l.Ref("layered"), amd64); err != nil {
		t.Errorf("Get(in use) after prune = %v", err)
	}
	// Layers of the kept image still read.
	readLayerFiles(t, a)
	if err := s.Release(ctx, a.Digest(), "sandbox-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, l.Ref("layered"), false); err != nil {
		t.Errorf("Remove after Release = %v", err)
	}
	if err := s.Remove(ctx, l.Ref("layered"), false); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("Remove twice = %v, want ErrNotFound", err)
	}
	blobs, _ := os.ReadDir(filepath.Join(s.Dir(), "blobs", "sha256"))
	if len(blobs) != 0 {
		t.Errorf("%d blobs left after removing everything", len(blobs))
	}
	// Forced removal.
	c, err := s.Pull(ctx, l.Ref("layered"), oci.PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Acquire(ctx, c.Digest(), "sandbox-2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, string(c.Digest()), true); err != nil {
		t.Errorf("Remove(force) = %v", err)
	}
	if list, _ := s.List(ctx); len(list) != 0 {
		t.Errorf("List after forced remove = %v", list)
	}
}

func TestTamperedBlobRejected(t *testing.T) {
	isolateHome(t)
	reg, l := setup(t, ocitest.Options{})
	ctx := context.Background()
	// Push a manifest whose first layer descriptor points at a blob that
	// holds other bytes: the registry serves a blob whose digest does not
	// match (we upload "evil" content under the manifest's claimed size).
	evil := []byte("not the layer")
	if err := reg.PushBlob(ctx, "test/evil", evil); err != nil {
		t.Fatal(err)
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + string(oci.FromBytes([]byte("other"))) + `"]}}`)
	if err := reg.PushBlob(ctx, "test/evil", cfg); err != nil {
		t.Fatal(err)
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		oci.FromBytes(cfg), len(cfg), oci.FromBytes(evil), len(evil))
	if err := reg.PushManifest(ctx, "test/evil", "v1", "application/vnd.oci.image.manifest.v1+json", []byte(m)); err != nil {
		t.Fatal(err)
	}
	_ = l
	s := newStore(t)
	_, err := s.Pull(ctx, reg.Ref("test/evil", "v1"), oci.PullOptions{Insecure: true, Platform: amd64})
	if !errors.Is(err, oci.ErrInvalidImage) {
		t.Errorf("Pull(diff_id mismatch) = %v, want ErrInvalidImage", err)
	}
	if list, _ := s.List(ctx); len(list) != 0 {
		t.Errorf("List after failed pull = %v", list)
	}
	// A wrong digest in the reference.
	wrong := reg.Host + "/test/layered@" + string(oci.FromBytes([]byte("x")))
	if _, err := s.Pull(ctx, wrong, oci.PullOptions{Insecure: true}); err == nil {
		t.Errorf("Pull(%s) succeeded", wrong)
	}
}
