// SPDX-License-Identifier: Apache-2.0

package p9

// LockGuest takes the device lock, under which the session's reader
// touches guest memory, and returns its unlock. The fake guest of the
// tests holds it while it reads or writes the rings and buffers, so that
// the race detector sees its accesses ordered with the device's (a real
// guest orders them with the barriers of package virtio).
func LockGuest(d *Device) (unlock func()) {
	d.mu.Lock()
	return d.mu.Unlock
}
