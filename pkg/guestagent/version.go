// SPDX-License-Identifier: Apache-2.0

package guestagent

import (
	"fmt"
	"slices"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// Protocol versions this build speaks.
const (
	// Version is the newest protocol version this build speaks.
	Version = 1
	// MinVersion is the oldest protocol version this build speaks.
	MinVersion = 1
)

// Capabilities this build offers. A side only uses a feature whose
// capability both sides listed.
const (
	CapExec    = "exec"
	CapTTY     = "tty"
	CapRlimits = "rlimits"
	CapFS      = "fs"
	CapMetrics = "metrics"
	CapPower   = "power" // ShutdownRequest
)

// AllCapabilities lists every capability of this build.
func AllCapabilities() []string {
	return []string{CapExec, CapTTY, CapRlimits, CapFS, CapMetrics, CapPower}
}

// Limits on peer-supplied hello contents.
const (
	maxCapabilities  = 64
	maxCapabilityLen = 64
	maxAgentLen      = 128
)

// DefaultMaxStreams is the number of concurrent streams a guest serves when
// its Config leaves it zero.
const DefaultMaxStreams = 1024

// Offer is what one side brings to the handshake.
type Offer struct {
	MinVersion, MaxVersion uint32   // zero: MinVersion, Version
	Capabilities           []string // nil: AllCapabilities
	MaxFrameSize           uint32   // the largest frame this side accepts; zero: DefaultMaxFrameSize
	MaxStreams             uint32   // guest only; zero: DefaultMaxStreams
	Agent                  string   // software name and version, for logs
}

func (o Offer) norm() Offer {
	if o.MinVersion == 0 {
		o.MinVersion = MinVersion
	}
	if o.MaxVersion == 0 {
		o.MaxVersion = Version
	}
	if o.Capabilities == nil {
		o.Capabilities = AllCapabilities()
	}
	o.MaxFrameSize = ClampFrameSize(o.MaxFrameSize)
	if o.MaxStreams == 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	return o
}

// Hello returns the host's first frame for o.
func (o Offer) Hello() *agentpb.Frame {
	o = o.norm()
	return &agentpb.Frame{Msg: &agentpb.Frame_Hello{Hello: &agentpb.Hello{
		MinVersion: o.MinVersion, MaxVersion: o.MaxVersion,
		Capabilities: o.Capabilities, MaxFrameSize: o.MaxFrameSize, Agent: o.Agent,
	}}}
}

// Session is the outcome of a handshake.
type Session struct {
	Version      uint32
	Capabilities []string
	// PeerMaxFrameSize is the largest frame the peer accepts.
	PeerMaxFrameSize uint32
	// MaxStreams is the number of concurrent streams the guest serves.
	MaxStreams uint32
	// PeerAgent is the peer's self-description, sanitised.
	PeerAgent string
}

// Has reports whether both sides offered capability c.
func (s Session) Has(c string) bool { return slices.Contains(s.Capabilities, c) }

// VersionError reports version ranges that do not meet. It matches
// ErrIncompatible.
type VersionError struct {
	HostMin, HostMax   uint32
	GuestMin, GuestMax uint32
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("guestagent: incompatible protocol version: host speaks %d-%d, guest speaks %d-%d",
		e.HostMin, e.HostMax, e.GuestMin, e.GuestMax)
}

// Is reports whether target is ErrIncompatible.
func (e *VersionError) Is(target error) bool { return target == ErrIncompatible }

func intersect(local, remote []string) []string {
	var out []string
	for _, c := range remote {
		if slices.Contains(local, c) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func checkCaps(caps []string) error {
	if len(caps) > maxCapabilities {
		return ProtocolErrorf("%d capabilities, at most %d", len(caps), maxCapabilities)
	}
	for _, c := range caps {
		if len(c) > maxCapabilityLen {
			return ProtocolErrorf("capability of %d bytes", len(c))
		}
	}
	return nil
}

// Negotiate is the guest's side of the handshake: it answers the host's
// first frame. The frame is host-controlled: a frame that is not a Hello, a
// bad range or oversized contents give an error matching ErrProtocol.
// Disjoint version ranges give a reply carrying an error (to be sent before
// closing) and a *VersionError. The version chosen is the highest in both
// ranges, so a host newer than the guest degrades to the guest's version.
func Negotiate(local Offer, first *agentpb.Frame) (*agentpb.Frame, Session, error) {
	local = local.norm()
	h := first.GetHello()
	if h == nil || first.GetStream() != 0 {
		return nil, Session{}, ProtocolErrorf("first frame is not a hello on stream 0")
	}
	if h.GetMinVersion() == 0 || h.GetMinVersion() > h.GetMaxVersion() {
		return nil, Session{}, ProtocolErrorf("hello version range %d-%d", h.GetMinVersion(), h.GetMaxVersion())
	}
	if err := checkCaps(h.GetCapabilities()); err != nil {
		return nil, Session{}, err
	}
	if h.GetMaxFrameSize() < MinFrameSize {
		return nil, Session{}, ProtocolErrorf("hello max frame size %d below %d", h.GetMaxFrameSize(), MinFrameSize)
	}
	reply := &agentpb.HelloReply{
		MinVersion: local.MinVersion, MaxVersion: local.MaxVersion,
		MaxFrameSize: local.MaxFrameSize, MaxStreams: local.MaxStreams, Agent: local.Agent,
	}
	frame := &agentpb.Frame{Msg: &agentpb.Frame_HelloReply{HelloReply: reply}}
	if h.GetMaxVersion() < local.MinVersion || h.GetMinVersion() > local.MaxVersion {
		verr := &VersionError{HostMin: h.GetMinVersion(), HostMax: h.GetMaxVersion(), GuestMin: local.MinVersion, GuestMax: local.MaxVersion}
		reply.Error = verr.Error()
		return frame, Session{}, verr
	}
	reply.Version = min(h.GetMaxVersion(), local.MaxVersion)
	reply.Capabilities = intersect(local.Capabilities, h.GetCapabilities())
	s := Session{
		Version: reply.Version, Capabilities: reply.Capabilities,
		PeerMaxFrameSize: min(h.GetMaxFrameSize(), MaxFrameSizeLimit),
		MaxStreams:       local.MaxStreams, PeerAgent: sanitizeAgent(h.GetAgent()),
	}
	return frame, s, nil
}

func sanitizeAgent(s string) string {
	if len(s) > maxAgentLen {
		s = s[:maxAgentLen]
	}
	return sanitize(s)
}

// CheckReply is the host's side of the handshake: it checks the guest's
// reply against what the host offered. The reply is guest-controlled: a
// version outside the host's range, a zero stream limit or a small frame
// size give errors matching ErrProtocol; a refusal gives a *VersionError.
func CheckReply(local Offer, f *agentpb.Frame) (Session, error) {
	local = local.norm()
	r := f.GetHelloReply()
	if r == nil || f.GetStream() != 0 {
		return Session{}, ProtocolErrorf("hello answered by something other than a hello reply on stream 0")
	}
	if r.GetError() != "" || r.GetVersion() == 0 {
		return Session{}, &VersionError{HostMin: local.MinVersion, HostMax: local.MaxVersion, GuestMin: r.GetMinVersion(), GuestMax: r.GetMaxVersion()}
	}
	if r.GetVersion() < local.MinVersion || r.GetVersion() > local.MaxVersion {
		return Session{}, ProtocolErrorf("guest chose version %d outside %d-%d", r.GetVersion(), local.MinVersion, local.MaxVersion)
	}
	if err := checkCaps(r.GetCapabilities()); err != nil {
		return Session{}, err
	}
	if r.GetMaxFrameSize() < MinFrameSize {
		return Session{}, ProtocolErrorf("guest max frame size %d below %d", r.GetMaxFrameSize(), MinFrameSize)
	}
	if r.GetMaxStreams() == 0 {
		return Session{}, ProtocolErrorf("guest serves no streams")
	}
	return Session{
		Version:          r.GetVersion(),
		Capabilities:     intersect(local.Capabilities, r.GetCapabilities()),
		PeerMaxFrameSize: min(r.GetMaxFrameSize(), MaxFrameSizeLimit),
		MaxStreams:       min(r.GetMaxStreams(), 1<<16),
		PeerAgent:        sanitizeAgent(r.GetAgent()),
	}, nil
}
