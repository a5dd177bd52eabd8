// SPDX-License-Identifier: Apache-2.0

package host

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/agentpb"
)

// Shutdown asks the agent to end the machine: stop every process, sync,
// unmount and power off, or reboot when reboot is set. It returns once the
// agent has accepted; the connection then ends with the machine, which the
// VMM reports (power-off, or a reset for a reboot). The machine may end
// before the acceptance crosses the connection: a connection that closes
// after the request was sent counts as accepted, and callers learn the
// outcome from the VMM.
func (c *Client) Shutdown(ctx context.Context, reboot bool) error {
	if !c.sess.Has(guestagent.CapPower) {
		return fmt.Errorf("host: shutdown: guest lacks the %q capability", guestagent.CapPower)
	}
	st, err := c.open(ctx, kindShutdown, &agentpb.Frame{Msg: &agentpb.Frame_Shutdown{Shutdown: &agentpb.ShutdownRequest{Reboot: reboot}}})
	if err != nil {
		return fmt.Errorf("host: shutdown: %w", err)
	}
	defer st.abandon(context.Background())
	f, err := st.next(ctx)
	if err != nil {
		// The peer ended the connection (end of file), not this client.
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		return fmt.Errorf("host: shutdown: %w", err)
	}
	if e := f.GetError(); e != nil {
		return guestagent.ErrorFromProto("shutdown", e)
	}
	return nil
}

// Drain asks the agent to start no more processes and to power off once
// every running exec has ended (at once when none runs). It returns once
// the agent accepted; new execs then fail with guestagent.ErrUnavailable.
func (c *Client) Drain(ctx context.Context) error {
	if !c.sess.Has(guestagent.CapPower) {
		return fmt.Errorf("host: drain: guest lacks the %q capability", guestagent.CapPower)
	}
	st, err := c.open(ctx, kindShutdown, &agentpb.Frame{Msg: &agentpb.Frame_Shutdown{Shutdown: &agentpb.ShutdownRequest{Drain: true}}})
	if err != nil {
		return fmt.Errorf("host: drain: %w", err)
	}
	defer st.abandon(context.Background())
	f, err := st.next(ctx)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil // nothing ran: the machine ended at once
		}
		return fmt.Errorf("host: drain: %w", err)
	}
	if e := f.GetError(); e != nil {
		return guestagent.ErrorFromProto("drain", e)
	}
	return nil
}
