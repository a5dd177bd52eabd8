// SPDX-License-Identifier: Apache-2.0

package vsock_test

import (
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/internal/leaktest"
	"github.com/microsandbox-go/microsandbox/pkg/vmm/virtio/vsock"
)

// fuzzLayout keeps guest memory small so that each input is cheap.
var fuzzLayout = layout{queueSize: 8, rxBuf: vsock.HeaderSize + 256, txBuf: vsock.HeaderSize + 1024}

// fuzzPort is the host port a listener serves during FuzzPacket.
const fuzzPort = 1000

// script frames packets for FuzzPacket: per packet a split byte, a
// little-endian u16 length and the packet's bytes.
func script(pkts ...[]byte) []byte {
	var out []byte
	for _, p := range pkts {
		out = append(out, byte(len(p)/2))
		out = binary.LittleEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

// fuzzPkt builds a guest packet from guest port 5 to the fuzz port.
func fuzzPkt(op vsock.Op, flags uint32, fwd uint32, payload string) []byte {
	h := vsock.NewHeader()
	h.SetSrcCID(guestCID)
	h.SetDstCID(vsock.HostCID)
	h.SetSrcPort(5)
	h.SetDstPort(fuzzPort)
	h.SetType(vsock.TypeStream)
	h.SetOp(op)
	h.SetFlags(flags)
	h.SetBufAlloc(64)
	h.SetFwdCnt(fwd)
	h.SetLen(uint32(len(payload)))
	return append(h, payload...)
}

// FuzzPacket posts arbitrary packets on the tx queue while a host listener
// accepts, writes and reads. The device must not panic, must keep its
// bounds (connections, buffered bytes) and must leave no goroutine behind
// once closed.
func FuzzPacket(f *testing.F) {
	f.Add(script(fuzzPkt(vsock.OpRequest, 0, 0, ""), fuzzPkt(vsock.OpRW, 0, 0, "hello"), fuzzPkt(vsock.OpShutdown, 3, 0, "")))
	f.Add(script(fuzzPkt(vsock.OpRequest, 0, 0, ""), fuzzPkt(vsock.OpCreditRequest, 0, 0, ""), fuzzPkt(vsock.OpCreditUpdate, 0, 0xffffffff, ""), fuzzPkt(vsock.OpRST, 0, 0, "")))
	f.Add(script(fuzzPkt(vsock.OpRequest, 0, 0, ""), fuzzPkt(vsock.OpRequest, 0, 0, ""), fuzzPkt(vsock.OpRW, 0, 0, string(make([]byte, 300)))))
	f.Add(script(fuzzPkt(vsock.OpRW, 0, 0, "x"), fuzzPkt(vsock.OpResponse, 0, 0, ""), fuzzPkt(99, 0, 0, "")))
	f.Add(script(fuzzPkt(vsock.OpRequest, 0, 0, "")[:20], fuzzPkt(vsock.OpRequest, 0, 0, "")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is a bug too: turn it into a crash the fuzzer records.
		watchdog := time.AfterFunc(20*time.Second, func() { panic("FuzzPacket hung:\n" + leaktest.Stacks()) })
		defer watchdog.Stop()
		before := leaktest.Count()
		g := newGuest(t, vsock.Config{BufferSize: 512, MaxConnections: 4, Backlog: 2, CloseTimeout: 5 * time.Millisecond}, fuzzLayout)
		l, err := g.dev.Listen(fuzzPort)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.SetDeadline(time.Now().Add(5 * time.Millisecond))
				c.Write([]byte("hi"))
				c.Read(make([]byte, 16))
				c.(*vsock.Conn).CloseWrite()
				c.Close()
			}
		})
		for n := 0; len(data) >= 3 && n < 16; n++ {
			split := int(data[0])
			size := int(binary.LittleEndian.Uint16(data[1:]))
			data = data[3:]
			size = min(size, len(data), int(fuzzLayout.txBuf))
			if size > 0 {
				g.sendRaw(data[:size], split)
			}
			data = data[size:]
			g.poll()
		}
		g.drainTx()
		g.poll()
		if n := vsock.ConnCount(g.dev); n > 4 {
			t.Fatalf("device holds %d connections, limit 4", n)
		}
		l.Close()
		wg.Wait()
		g.dev.Close()
		if n := leaktest.Settle(before, 2*time.Second); n > before {
			t.Fatalf("%d goroutines before, %d after", before, n)
		}
	})
}
