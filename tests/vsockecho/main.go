// SPDX-License-Identifier: Apache-2.0

//go:build linux

// Command vsockecho runs inside a sandbox for tests/sdkbench: it listens on
// a vsock port and echoes every connection's bytes back, the guest half of
// a raw vsock round trip measured beside the agent's exec round trip.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/mdlayher/vsock"
)

func main() {
	port := flag.Uint("port", 5000, "vsock port to listen on")
	flag.Parse()
	l, err := vsock.Listen(uint32(*port), nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vsockecho: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("listening")
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "vsockecho: %v\n", err)
			os.Exit(1)
		}
		go func(c net.Conn) {
			defer c.Close()
			io.Copy(c, c)
		}(c)
	}
}
