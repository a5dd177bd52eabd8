// SPDX-License-Identifier: Apache-2.0

// Package ocitest serves images from an in-process registry for tests:
// go-containerregistry's pkg/registry (an in-memory Docker Registry HTTP
// API v2) behind net/http/httptest, optionally with HTTP basic auth and a
// self-signed TLS certificate, with request counters. Push uploads an OCI
// image layout to it over the registry API.
//
// Goroutines: the httptest server's, stopped by the cleanup registered
// with testing.TB.
package ocitest
