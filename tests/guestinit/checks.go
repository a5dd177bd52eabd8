// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/tests/guestproto"
)

// checkBlk reads the host's data from /dev/vda and reports its hash, writes
// stream 7 after it for the host to verify, and tries to write /dev/vdb,
// which is read-only.
func checkBlk() {
	f, err := os.OpenFile("/dev/vda", os.O_RDWR, 0)
	if err != nil {
		report("blk_error", "%v", err)
		return
	}
	h := sha256.New()
	if _, err := io.CopyN(h, f, guestproto.BlkDataBytes); err != nil {
		report("blk_error", "read: %v", err)
		return
	}
	report("blk_read_sha256", "%s", hex.EncodeToString(h.Sum(nil)))
	data := make([]byte, guestproto.BlkWriteBytes)
	io.ReadFull(guestproto.Stream(guestproto.BlkWriteStream), data)
	if _, err := f.WriteAt(data, guestproto.BlkWriteOffset); err != nil {
		report("blk_error", "write: %v", err)
		return
	}
	if err := f.Sync(); err != nil {
		report("blk_error", "fsync: %v", err)
		return
	}
	f.Close()
	report("blk_written", "%d", guestproto.BlkWriteBytes)

	ro, err := os.OpenFile("/dev/vdb", os.O_RDWR, 0)
	if err == nil {
		_, err = ro.WriteAt([]byte("must not land"), 0)
		if err == nil {
			err = ro.Sync()
		}
		ro.Close()
	}
	report("blk_ro_write", "%v", errString(err))
}

func errString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// checkRNG reads the entropy device twice.
func checkRNG() {
	f, err := os.Open("/dev/hwrng")
	if err != nil {
		report("rng_error", "%v", err)
		return
	}
	defer f.Close()
	for i := range 2 {
		b := make([]byte, 32)
		if _, err := io.ReadFull(f, b); err != nil {
			report("rng_error", "%v", err)
			return
		}
		report("rng_"+strconv.Itoa(i), "%x", b)
	}
}

// checkVsock runs guestproto.VsockConnections transfers each way: the guest dials the
// host, and accepts the host's dials. Each connection carries its index
// (4 bytes), then `each` bytes of a stream from the dialer, then `each`
// bytes of another stream back; the receivers compare with the streams.
func checkVsock(totalMiB int) {
	each := int64(totalMiB) << 20 / guestproto.VsockConnections
	lfd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Bind(lfd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: guestproto.VsockGuestPort})
	}
	if err == nil {
		err = unix.Listen(lfd, guestproto.VsockConnections)
	}
	if err != nil {
		report("vsock_error", "listen: %v", err)
		return
	}
	report("vsock_listening", "%d", guestproto.VsockGuestPort)

	var wg sync.WaitGroup
	errs := make(chan error, 2*guestproto.VsockConnections)
	for i := range guestproto.VsockConnections {
		wg.Go(func() {
			fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: guestproto.VsockHostPort})
			}
			if err != nil {
				errs <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			c := os.NewFile(uintptr(fd), "vsock")
			defer c.Close()
			errs <- guestproto.Dialer(c, uint32(i), each)
		})
		wg.Go(func() {
			fd, _, err := unix.Accept(lfd)
			if err != nil {
				errs <- fmt.Errorf("accept: %w", err)
				return
			}
			c := os.NewFile(uintptr(fd), "vsock")
			defer c.Close()
			errs <- guestproto.Acceptor(c, each)
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		report("vsock_error", "%v", err)
		return
	}
	report("vsock_ok", "%d", 2*guestproto.VsockConnections)
}

// checkVsockPing makes one connection to the host's listening port and
// sends one byte: the boot benchmark times it.
func checkVsockPing() {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: guestproto.VsockHostPort})
	}
	if err == nil {
		_, err = unix.Write(fd, []byte{1})
		unix.Close(fd)
	}
	report("vsockping", "%s", errString(err))
}
