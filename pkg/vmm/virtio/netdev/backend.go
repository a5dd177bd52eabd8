// SPDX-License-Identifier: Apache-2.0

package netdev

// Backend receives the frames the guest transmits. The device defines it;
// the host network (pkg/netstack, wired by pkg/sandbox) implements it.
// Frames in the other direction, host to guest, go through
// [Device.Deliver] and [Device.DeliverContext].
type Backend interface {
	// WriteFrame takes one Ethernet frame the guest sent: destination MAC
	// first, no FCS, no virtio_net_hdr, 14 to MTU+18 bytes. The frame is
	// a fresh copy that the backend owns and may keep. It is called from
	// the device's worker goroutine, one frame at a time and in the
	// guest's order, with no device lock held; it must not block for long
	// (the worker also fills the guest's rx buffers), and must not call
	// Device.Reset or Device.Close. An error drops the frame, counted in
	// Metrics.TxDropsBackend; it does not stop the device.
	WriteFrame(frame []byte) error
}

// BackendFunc adapts a function to a [Backend].
type BackendFunc func(frame []byte) error

// WriteFrame implements Backend.
func (f BackendFunc) WriteFrame(frame []byte) error { return f(frame) }
