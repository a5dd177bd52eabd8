// SPDX-License-Identifier: Apache-2.0

package netdev

// LockGuest takes the device lock, under which the worker touches guest
// memory, and returns its unlock. The fake guest driver of the tests holds
// it while it reads or writes the rings and buffers, so that the race
// detector sees the fake guest's accesses ordered with the device's (a
// real guest orders them with the barriers of package virtio).
func LockGuest(d *Device) (unlock func()) {
	d.mu.Lock()
	return d.mu.Unlock
}

// Queued returns the number of host frames waiting for guest buffers.
func Queued(d *Device) int {
	d.rxMu.Lock()
	defer d.rxMu.Unlock()
	return d.rxCount
}
