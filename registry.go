// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"fmt"
	"os"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// PullPolicy says when CreateSandbox fetches the image from its source.
type PullPolicy string

// Pull policies.
const (
	// PullPolicyDefault is PullPolicyIfMissing.
	PullPolicyDefault PullPolicy = ""
	// PullPolicyAlways resolves the reference at the source every time.
	PullPolicyAlways PullPolicy = "always"
	// PullPolicyIfMissing uses the stored image when there is one.
	PullPolicyIfMissing PullPolicy = "if-missing"
	// PullPolicyNever uses only the stored image; a missing one is
	// ErrImageNotFound.
	PullPolicyNever PullPolicy = "never"
)

// RegistryAuth is basic registry credentials.
type RegistryAuth struct {
	Username, Password string
}

// registryOptions is what the registry options collect.
type registryOptions struct {
	auth      *RegistryAuth
	insecure  bool
	caCerts   []byte
	caPaths   []string
	hasConfig bool
}

// WithPullPolicy sets the pull policy; default if-missing.
func WithPullPolicy(p PullPolicy) SandboxOption {
	return func(c *SandboxConfig) { c.PullPolicy = p }
}

// WithRegistryAuth pulls with these credentials instead of the auth files.
// They are never persisted.
func WithRegistryAuth(a RegistryAuth) SandboxOption {
	return func(c *SandboxConfig) { c.registry.auth, c.registry.hasConfig = &a, true }
}

// WithRegistryInsecure allows plain HTTP and unverified TLS to the
// registry.
func WithRegistryInsecure() SandboxOption {
	return func(c *SandboxConfig) { c.registry.insecure, c.registry.hasConfig = true, true }
}

// WithRegistryCACerts trusts these PEM CA certificates for the registry;
// repeated calls accumulate.
func WithRegistryCACerts(pem []byte) SandboxOption {
	return func(c *SandboxConfig) {
		c.registry.caCerts = append(append(c.registry.caCerts, pem...), '\n')
		c.registry.hasConfig = true
	}
}

// WithRegistryCACertsPath trusts the PEM CA certificates in the file at
// path, read by CreateSandbox (an unreadable file fails it).
func WithRegistryCACertsPath(path string) SandboxOption {
	return func(c *SandboxConfig) {
		c.registry.caPaths = append(c.registry.caPaths, path)
		c.registry.hasConfig = true
	}
}

// sandboxRegistry converts the registry options.
func (r *registryOptions) sandboxRegistry() (*sandbox.Registry, error) {
	if !r.hasConfig {
		return nil, nil
	}
	out := &sandbox.Registry{Insecure: r.insecure, CACertificates: r.caCerts}
	if r.auth != nil {
		out.Username, out.Password = r.auth.Username, r.auth.Password
	}
	for _, p := range r.caPaths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, &Error{Kind: ErrInvalidConfig, Message: fmt.Sprintf("invalid config: registry CA certificates: %v", err), Cause: err}
		}
		out.CACertificates = append(append(out.CACertificates, b...), '\n')
	}
	return out, nil
}
