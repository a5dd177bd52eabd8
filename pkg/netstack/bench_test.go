// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/netstack"
	"github.com/microsandbox-go/microsandbox/pkg/netstack/netstacktest"
)

// The benchmarks below come in pairs: "netstack" goes guest → stack →
// host socket → a 127.0.0.1 listener; "loopback" is the same client work
// over the host loopback directly (net.Dial to the same listener). Report
// the ratio of the two, measured in one run:
//
//	go test -run '^$' -bench 'TCP' -benchtime 3s ./pkg/netstack/

// discardServer reads each connection to EOF and answers with the byte
// count (8 bytes, big-endian).
func discardServer(tb testing.TB) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
			}()
		}
	}()
	tb.Cleanup(func() { l.Close(); wg.Wait() })
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

type dialer func(ctx context.Context, dst netip.AddrPort) (net.Conn, error)

// benchPeers returns the two ways to reach a 127.0.0.1 port: through a
// stack (as the guest, towards a public address the fake network maps to
// 127.0.0.1) and directly.
func benchPeers(b *testing.B) map[string]dialer {
	fn := &fakeNet{}
	_, g := netstacktest.Connect(b, netstack.Config{Dial: fn.Dial, HostAddrs: []netip.Addr{}, DNSServers: []netip.AddrPort{}})
	pub := netip.MustParseAddr("203.0.113.10")
	return map[string]dialer{
		"netstack": func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			return g.DialTCP(ctx, netip.AddrPortFrom(pub, dst.Port()))
		},
		"loopback": func(ctx context.Context, dst netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp4", dst.String())
		},
	}
}

// BenchmarkTCPThroughput streams b.N 64 KiB writes over one connection.
func BenchmarkTCPThroughput(b *testing.B) {
	port := discardServer(b)
	peers := benchPeers(b)
	for _, name := range []string{"netstack", "loopback"} {
		b.Run(name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := peers[name](ctx, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			chunk := make([]byte, 64<<10)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			var n [8]byte
			if _, err := io.ReadFull(c, n[:]); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if got := binary.BigEndian.Uint64(n[:]); got != uint64(b.N*len(chunk)) {
				b.Fatalf("server counted %d bytes, want %d", got, b.N*len(chunk))
			}
		})
	}
}

// BenchmarkTCPConnect opens, uses (a 4-byte echo) and closes one
// connection per iteration.
func BenchmarkTCPConnect(b *testing.B) {
	e := startEcho(b)
	peers := benchPeers(b)
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), e.port)
	for _, name := range []string{"netstack", "loopback"} {
		b.Run(name, func(b *testing.B) {
			b.ResetTimer()
			for range b.N {
				if err := tryTCP(context.Background(), peers[name], dst); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conns/s")
		})
	}
}
