// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"fmt"
	"os"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// shutdown starts the machine's end through Config.Power and acknowledges.
// A drain only marks the server: the last exec to end powers off (at once
// when none runs).
func (c *conn) shutdown(req *agentpb.ShutdownRequest) (*agentpb.Frame, error) {
	power := c.srv.cfg.Power
	if power == nil {
		return nil, fmt.Errorf("%w: this agent cannot power off", guestagent.ErrUnavailable)
	}
	accepted := &agentpb.Frame{Msg: &agentpb.Frame_ShutdownAccepted{ShutdownAccepted: &agentpb.ShutdownAccepted{}}}
	if req.GetDrain() {
		s := c.srv
		s.mu.Lock()
		s.draining = true
		idle := s.running == 0 && !s.powered
		s.powered = s.powered || idle
		s.mu.Unlock()
		if idle {
			if err := power(false); err != nil {
				return nil, err
			}
		}
		return accepted, nil
	}
	if err := power(req.GetReboot()); err != nil {
		return nil, err
	}
	return accepted, nil
}

// beginExec counts an exec that is about to start; false while draining.
func (s *Server) beginExec() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.running++
	return true
}

// endExec counts an exec that ended; the last one of a drain powers off.
func (s *Server) endExec() {
	s.mu.Lock()
	s.running--
	last := s.draining && s.running == 0 && !s.powered
	s.powered = s.powered || last
	s.mu.Unlock()
	if last {
		if err := s.cfg.Power(false); err != nil {
			fmt.Fprintf(os.Stderr, "guest: power off after the drain: %v\n", err)
		}
	}
}
