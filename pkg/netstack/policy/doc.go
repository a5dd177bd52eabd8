// SPDX-License-Identifier: Apache-2.0

// Package policy decides which network flows a sandbox may make.
//
// It models upstream microsandbox's NetworkPolicy (default actions per
// direction, ordered rules where the first match wins, destination groups,
// CIDRs, domains and domain suffixes, protocols and port ranges) and the
// presets None, AllowAll and FromProfiles, whose FromProfiles(ProfilePublic)
// is the default.
//
// Every decision is a pure function of the flow and an [Env] (which
// addresses are the host's, which names the sandbox resolved to an address),
// so the package does no I/O, starts no goroutines and holds no locks. Its
// inputs come from the guest: addresses may be IPv4-mapped IPv6, unspecified,
// multicast or otherwise odd, and names may look like numbers. [Classify]
// normalises addresses before matching; names are never parsed as addresses.
//
// The package imports nothing from gVisor, so pkg/sandbox and the SDK may
// build policies without linking the network stack.
package policy
