// SPDX-License-Identifier: Apache-2.0

package virtiotest

import (
	"sync/atomic"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// Interrupt is a virtio.Interrupt that counts signals, for testing devices
// activated directly rather than through a transport.
type Interrupt struct {
	// UsedBuffer counts SignalUsedBuffer calls.
	UsedBuffer atomic.Int64
	// ConfigChange counts SignalConfigChange calls.
	ConfigChange atomic.Int64
	// NeedsReset counts SignalNeedsReset calls.
	NeedsReset atomic.Int64
}

var _ virtio.Interrupt = (*Interrupt)(nil)

// SignalUsedBuffer implements virtio.Interrupt.
func (i *Interrupt) SignalUsedBuffer() { i.UsedBuffer.Add(1) }

// SignalConfigChange implements virtio.Interrupt.
func (i *Interrupt) SignalConfigChange() { i.ConfigChange.Add(1) }

// SignalNeedsReset implements virtio.Interrupt.
func (i *Interrupt) SignalNeedsReset() { i.NeedsReset.Add(1) }
