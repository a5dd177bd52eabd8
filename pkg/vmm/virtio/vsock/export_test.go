// SPDX-License-Identifier: Apache-2.0

package vsock

// LockGuest takes the device lock, under which the worker touches guest
// memory, and returns its unlock. The fake guest driver of the tests holds
// it while it reads or writes the rings and buffers, so that the race
// detector sees the fake guest's accesses ordered with the device's (a
// real guest orders them with the barriers of package virtio).
func LockGuest(d *Device) (unlock func()) {
	d.mu.Lock()
	return d.mu.Unlock
}

// ConnCount returns the number of connections the device holds.
func ConnCount(d *Device) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// Buffered returns the bytes c holds for the host to read.
func Buffered(c *Conn) int {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	return len(c.rbuf)
}
