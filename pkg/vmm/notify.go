// SPDX-License-Identifier: Apache-2.0

package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/vmm/kvm"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio"
)

// notifier turns guest queue notifications into device calls without a VM
// exit to user space: KVM signals an eventfd per queue (ioeventfd on the
// transport's QueueNotify register, matched on the queue index) and one
// goroutine waits on all of them with epoll, then delivers the notification
// through the transport as if the vCPU had written the register.
//
// It saves the vCPU a round trip through this process on every kick, which
// under nested virtualization is the most expensive part of a notification.
type notifier struct {
	epfd   int
	stopFD int // eventfd that wakes the loop to end it
	queues []queueFD
}

type queueFD struct {
	fd        int
	transport BusDevice
	index     uint32
}

func newNotifier() (*notifier, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("vmm: epoll: %w", err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("vmm: eventfd: %w", err)
	}
	n := &notifier{epfd: epfd, stopFD: stop}
	if err := n.watch(stop, -1); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

func (n *notifier) watch(fd int, slot int32) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: slot}
	if err := unix.EpollCtl(n.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("vmm: epoll add: %w", err)
	}
	return nil
}

// add registers the queues of a device whose transport sits at base.
func (n *notifier) add(vm *kvm.VM, base uint64, queues int, transport BusDevice) error {
	for q := range queues {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return fmt.Errorf("vmm: eventfd: %w", err)
		}
		n.queues = append(n.queues, queueFD{fd: fd, transport: transport, index: uint32(q)})
		if err := vm.IOEventFD(fd, base+virtio.MMIOQueueNotify, 4, uint64(q), kvm.IOEventDataMatch); err != nil {
			return err
		}
		if err := n.watch(fd, int32(len(n.queues)-1)); err != nil {
			return err
		}
	}
	return nil
}

// run delivers notifications until stop is called.
func (n *notifier) run() error {
	events := make([]unix.EpollEvent, 16)
	var counter [8]byte
	for {
		k, err := unix.EpollWait(n.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("vmm: epoll wait: %w", err)
		}
		for _, ev := range events[:k] {
			if ev.Fd < 0 {
				return nil
			}
			q := n.queues[ev.Fd]
			// Reading resets the counter: several kicks since the last
			// wake-up are one notification, which is all virtio needs.
			unix.Read(q.fd, counter[:])
			var idx [4]byte
			binary.LittleEndian.PutUint32(idx[:], q.index)
			q.transport.Write(virtio.MMIOQueueNotify, idx[:])
		}
	}
}

func (n *notifier) stop() { signalEventFD(n.stopFD) }

// close releases the descriptors; the VM's ioeventfds go with the VM.
func (n *notifier) close() {
	for _, q := range n.queues {
		unix.Close(q.fd)
	}
	unix.Close(n.stopFD)
	unix.Close(n.epfd)
}
