// SPDX-License-Identifier: Apache-2.0

package guest

import (
	"fmt"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// shutdown starts the machine's end through Config.Power and acknowledges.
func (c *conn) shutdown(req *agentpb.ShutdownRequest) (*agentpb.Frame, error) {
	power := c.srv.cfg.Power
	if power == nil {
		return nil, fmt.Errorf("%w: this agent cannot power off", guestagent.ErrUnavailable)
	}
	if err := power(req.GetReboot()); err != nil {
		return nil, err
	}
	return &agentpb.Frame{Msg: &agentpb.Frame_ShutdownAccepted{ShutdownAccepted: &agentpb.ShutdownAccepted{}}}, nil
}
