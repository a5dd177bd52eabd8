// SPDX-License-Identifier: Apache-2.0

package ocitest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
)

// Options configures a Registry.
type Options struct {
	// Username and Password, if Username is set, are required as HTTP basic
	// auth on every request.
	Username, Password string
	// TLS serves HTTPS with a self-signed certificate for 127.0.0.1; the CA
	// is Registry.CACert.
	TLS bool
}

// Registry is a running in-process registry.
type Registry struct {
	// Host is "127.0.0.1:port", the registry part of references.
	Host string
	// CACert is the PEM certificate to trust (TLS only).
	CACert []byte

	opts   Options
	srv    *httptest.Server
	client *http.Client

	mu     sync.Mutex // guards counts
	counts map[string]int
	total  atomic.Int64
}

// NewRegistry starts a registry that stops when the test ends.
func NewRegistry(t testing.TB, opts Options) *Registry {
	t.Helper()
	r := &Registry{opts: opts, counts: map[string]int{}}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.total.Add(1)
		r.mu.Lock()
		r.counts[req.Method+" "+kind(req.URL.Path)]++
		r.mu.Unlock()
		if opts.Username != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != opts.Username || p != opts.Password {
				w.Header().Set("WWW-Authenticate", `Basic realm="ocitest"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		h.ServeHTTP(w, req)
	})
	r.srv = httptest.NewUnstartedServer(handler)
	// Refused handshakes are part of the tests; keep them out of the log.
	r.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if opts.TLS {
		r.srv.StartTLS()
		r.CACert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.srv.Certificate().Raw})
	} else {
		r.srv.Start()
	}
	t.Cleanup(r.srv.Close)
	u, _ := url.Parse(r.srv.URL)
	r.Host = u.Host
	r.client = r.srv.Client()
	if opts.TLS {
		pool := x509.NewCertPool()
		pool.AddCert(r.srv.Certificate())
		r.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	}
	return r
}

// kind classifies a registry path for the counters.
func kind(p string) string {
	switch {
	case strings.Contains(p, "/manifests/"):
		return "manifest"
	case strings.Contains(p, "/blobs/uploads"):
		return "upload"
	case strings.Contains(p, "/blobs/"):
		return "blob"
	}
	return "other"
}

// Requests returns the number of requests served so far.
func (r *Registry) Requests() int64 { return r.total.Load() }

// Count returns the number of requests of method ("GET", "HEAD", ...) and
// kind ("manifest", "blob", "upload", "other") served so far.
func (r *Registry) Count(method, kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[method+" "+kind]
}

// Ref returns "HOST/repo:tag".
func (r *Registry) Ref(repo, tag string) string { return r.Host + "/" + repo + ":" + tag }

func (r *Registry) do(ctx context.Context, method, u, ctype string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if r.opts.Username != "" {
		req.SetBasicAuth(r.opts.Username, r.opts.Password)
	}
	return r.client.Do(req)
}

type desc struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
}

// Push uploads the image named name (its org.opencontainers.image.ref.name)
// of the OCI layout in dir as repo:tag, with everything it refers to.
func (r *Registry) Push(ctx context.Context, dir, name, repo, tag string) error {
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return err
	}
	var ix struct{ Manifests []desc }
	if err := json.Unmarshal(b, &ix); err != nil {
		return err
	}
	for _, d := range ix.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == name {
			return r.pushManifest(ctx, dir, repo, tag, d)
		}
	}
	return fmt.Errorf("ocitest: %s has no image %q", dir, name)
}

func readBlob(dir, dg string) ([]byte, error) {
	return os.ReadFile(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(dg, "sha256:")))
}

func (r *Registry) pushManifest(ctx context.Context, dir, repo, tag string, d desc) error {
	mb, err := readBlob(dir, d.Digest)
	if err != nil {
		return err
	}
	var m struct {
		Config    *desc
		Layers    []desc
		Manifests []desc
	}
	if err := json.Unmarshal(mb, &m); err != nil {
		return err
	}
	for _, c := range m.Manifests {
		if err := r.pushManifest(ctx, dir, repo, c.Digest, c); err != nil {
			return err
		}
	}
	blobs := m.Layers
	if m.Config != nil {
		blobs = append(blobs, *m.Config)
	}
	for _, bd := range blobs {
		data, err := readBlob(dir, bd.Digest)
		if err != nil {
			return err
		}
		if err := r.PushBlob(ctx, repo, data); err != nil {
			return err
		}
	}
	return r.PushManifest(ctx, repo, tag, d.MediaType, mb)
}

// PushBlob uploads one blob (POST then PUT, distribution-spec "monolithic
// upload").
func (r *Registry) PushBlob(ctx context.Context, repo string, data []byte) error {
	base := r.srv.URL + "/v2/" + repo
	resp, err := r.do(ctx, http.MethodPost, base+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("ocitest: start upload: %s", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", digestOf(data))
	loc.RawQuery = q.Encode()
	resp, err = r.do(ctx, http.MethodPut, loc.String(), "application/octet-stream", data)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("ocitest: upload blob: %s", resp.Status)
	}
	return nil
}

// PushManifest uploads manifest bytes as repo:ref (a tag or digest).
func (r *Registry) PushManifest(ctx context.Context, repo, ref, mediaType string, mb []byte) error {
	resp, err := r.do(ctx, http.MethodPut, r.srv.URL+"/v2/"+repo+"/manifests/"+ref, mediaType, mb)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("ocitest: put manifest %s: %s %s", ref, resp.Status, body)
	}
	return nil
}
