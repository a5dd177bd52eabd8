// SPDX-License-Identifier: Apache-2.0

// Package guestproto is what the end-to-end tests and their guest /init
// (guestinit) agree on: disk layout, vsock ports, and the deterministic
// transfers both ends check.
package guestproto
