// SPDX-License-Identifier: Apache-2.0

//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/microsandbox-go/microsandbox/pkg/guestagent/bootcfg"
	"github.com/microsandbox-go/microsandbox/pkg/guestagent/guest"
)

// configFD is the descriptor on which init hands the server the boot
// configuration (defaults applied).
const configFD = 3

// runServer is the server role: serve the agent protocol on vsock until
// SIGTERM or SIGINT (init's shutdown), and return the exit code.
func runServer() int {
	f := os.NewFile(configFD, "boot-config")
	if f == nil {
		errorf("server: no configuration descriptor")
		return 1
	}
	raw, err := io.ReadAll(io.LimitReader(f, 16<<20))
	f.Close()
	if err != nil {
		errorf("server: read configuration: %v", err)
		return 1
	}
	cfg, err := bootcfg.Parse(raw)
	if err != nil {
		errorf("server: %v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()

	srv, err := guest.New(guest.Config{
		Root: "/", Env: serverEnv(cfg.Env), Agent: "msb-agent",
		// Init (PID 1) owns the shutdown: SIGTERM powers off, SIGINT reboots.
		Power: func(reboot bool) error {
			if reboot {
				return unix.Kill(1, unix.SIGINT)
			}
			return unix.Kill(1, unix.SIGTERM)
		},
	})
	if err != nil {
		errorf("server: %v", err)
		return 1
	}
	// VMADDR_CID_ANY: the guest's CID is whatever the VMM configured.
	ln, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, bootcfg.AgentPort, nil)
	if err != nil {
		errorf("server: listen on vsock port %d: %v", bootcfg.AgentPort, err)
		return 1
	}
	logf("listening on vsock port %d (uptime %s)", bootcfg.AgentPort, uptime())
	err = srv.Serve(ctx, ln)
	if ctx.Err() != nil {
		return 0
	}
	errorf("server: %v", err)
	return 1
}

// serverEnv is the base environment of execs: the configured one, with the
// default PATH when it sets none.
func serverEnv(env []string) []string {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return env
		}
	}
	return append([]string{fmt.Sprintf("PATH=%s", guest.DefaultPath)}, env...)
}
