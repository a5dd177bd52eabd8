// SPDX-License-Identifier: Apache-2.0

package netstack_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeNet is the host side of the tests: every dial, whatever the address
// the stack asks for, goes to a listener on 127.0.0.1 with the same port, so
// nothing ever leaves this machine and every attempt is recorded.
type fakeNet struct {
	mu    sync.Mutex
	dials []string
}

func (f *fakeNet) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.dials = append(f.dials, network+" "+address)
	f.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, network, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String())
}

func (f *fakeNet) Dials() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.dials...)
}

// echoServers runs TCP and UDP echo servers on 127.0.0.1 on the same port.
type echoServers struct {
	port uint16
	tl   net.Listener
	uc   net.PacketConn
	wg   sync.WaitGroup
}

func startEcho(t testing.TB) *echoServers {
	t.Helper()
	for range 20 {
		tl, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := uint16(tl.Addr().(*net.TCPAddr).Port)
		uc, err := net.ListenPacket("udp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
		if err != nil {
			tl.Close()
			continue
		}
		e := &echoServers{port: port, tl: tl, uc: uc}
		e.wg.Add(2)
		go e.serveTCP()
		go e.serveUDP()
		t.Cleanup(e.close)
		return e
	}
	t.Fatal("no free port pair")
	return nil
}

func (e *echoServers) serveTCP() {
	defer e.wg.Done()
	var cw sync.WaitGroup
	defer cw.Wait()
	for {
		c, err := e.tl.Accept()
		if err != nil {
			return
		}
		cw.Add(1)
		go func() {
			defer cw.Done()
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

func (e *echoServers) serveUDP() {
	defer e.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, addr, err := e.uc.ReadFrom(buf)
		if err != nil {
			return
		}
		e.uc.WriteTo(buf[:n], addr)
	}
}

func (e *echoServers) close() {
	e.tl.Close()
	e.uc.Close()
	e.wg.Wait()
}

// tryTCP reports whether a guest TCP connection to dst echoes a message.
func tryTCP(ctx context.Context, dial func(context.Context, netip.AddrPort) (net.Conn, error), dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := dial(ctx, dst)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return errors.New("bad echo " + string(buf))
	}
	return nil
}

// tryUDP reports whether a guest UDP datagram to dst is echoed.
func tryUDP(dial func(netip.AddrPort) (net.Conn, error), dst netip.AddrPort, tries int, wait time.Duration) error {
	c, err := dial(dst)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 16)
	for range tries {
		c.SetDeadline(time.Now().Add(wait))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) == "ping" {
			return nil
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			return err
		}
	}
	return errors.New("no echo")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
