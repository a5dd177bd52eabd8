// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
)

// eachName runs fn for every name and returns 1 if any failed.
func eachName(names []string, fn func(string) error) int {
	code := 0
	for _, n := range names {
		if err := fn(n); err != nil {
			fmt.Fprintf(os.Stderr, "msb: %s: %v\n", n, err)
			code = 1
		}
	}
	return code
}

func namesFlags(cmd string, args []string, setup func(*flag.FlagSet)) ([]string, bool) {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	if setup != nil {
		setup(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, false
	}
	if fs.NArg() == 0 {
		fmt.Fprintf(os.Stderr, "usage: msb %s NAME...\n", cmd)
		return nil, false
	}
	return fs.Args(), true
}

func startCmd(ctx context.Context, args []string) int {
	names, ok := namesFlags("start", args, nil)
	if !ok {
		return 2
	}
	return eachName(names, func(n string) error {
		sb, err := microsandbox.StartSandboxDetached(ctx, n)
		if err != nil {
			return err
		}
		return sb.Detach(ctx)
	})
}

func stopCmd(ctx context.Context, args []string) int {
	var force bool
	var secs uint
	names, ok := namesFlags("stop", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&force, "force", false, "kill instead of a graceful stop")
		fs.BoolVar(&force, "f", false, "kill (shorthand)")
		fs.UintVar(&secs, "timeout", 10, "grace period in seconds before the kill")
		fs.UintVar(&secs, "t", 10, "grace period (shorthand)")
	})
	if !ok {
		return 2
	}
	return eachName(names, func(n string) error {
		h, err := microsandbox.GetSandbox(ctx, n)
		if err != nil {
			return err
		}
		if force {
			return h.Kill(ctx)
		}
		return h.Stop(ctx, microsandbox.WithStopTimeout(time.Duration(secs)*time.Second))
	})
}

func killCmd(ctx context.Context, args []string) int {
	return stopCmd(ctx, append([]string{"-f"}, args...))
}

func rmCmd(ctx context.Context, args []string) int {
	var force bool
	names, ok := namesFlags("rm", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&force, "force", false, "stop running sandboxes first")
		fs.BoolVar(&force, "f", false, "stop first (shorthand)")
	})
	if !ok {
		return 2
	}
	return eachName(names, func(n string) error {
		if force {
			h, err := microsandbox.GetSandbox(ctx, n)
			if err != nil {
				return err
			}
			if err := h.Stop(ctx); err != nil {
				return err
			}
		}
		return microsandbox.RemoveSandbox(ctx, n)
	})
}

// sandboxRow is one line of ls and ps.
type sandboxRow struct {
	Name    string            `json:"name"`
	Status  string            `json:"status"`
	Created time.Time         `json:"created"`
	Labels  map[string]string `json:"labels,omitempty"`
}

func listSandboxes(ctx context.Context, args []string, cmd string, runningOnly bool) int {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	format := fs.String("format", "", `"json" prints JSON`)
	var labels multiFlag
	fs.Var(&labels, "label", "only sandboxes with label K=V (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sel, err := keyValues("-label", labels)
	if err != nil {
		return fail("%s: %v", cmd, err)
	}
	var rows []sandboxRow
	cursor := ""
	for {
		opts := []microsandbox.ListOption{microsandbox.WithListLimit(100), microsandbox.WithListLabels(sel)}
		if cursor != "" {
			opts = append(opts, microsandbox.WithListCursor(cursor))
		}
		page, err := microsandbox.ListSandboxesWith(ctx, opts...)
		if err != nil {
			return fail("%s: %v", cmd, err)
		}
		for _, h := range page.Sandboxes {
			if runningOnly && h.Status() != microsandbox.SandboxStatusRunning {
				continue
			}
			rows = append(rows, sandboxRow{h.Name(), string(h.Status()), h.CreatedAt(), h.Labels()})
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if *asJSON || *format == "json" {
		if rows == nil {
			rows = []sandboxRow{}
		}
		b, _ := json.MarshalIndent(rows, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tCREATED\tLABELS")
	for _, r := range rows {
		var ls []string
		for k, v := range r.Labels {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Status, r.Created.Local().Format(time.DateTime), strings.Join(ls, ","))
	}
	tw.Flush()
	return 0
}

func lsCmd(ctx context.Context, args []string) int { return listSandboxes(ctx, args, "ls", false) }
func psCmd(ctx context.Context, args []string) int { return listSandboxes(ctx, args, "ps", true) }

func versionCmd(context.Context, []string) int {
	fmt.Println("msb " + microsandbox.SDKVersion())
	return 0
}

// installCmd copies msb, the guest kernel and the agent into MSB_HOME/bin.
func installCmd(ctx context.Context, args []string) int {
	if len(args) != 0 {
		fmt.Fprintln(os.Stderr, "usage: msb install")
		return 2
	}
	if err := microsandbox.Install(ctx); err != nil {
		return fail("install: %v", err)
	}
	fmt.Println("installed msb, vmlinux and msb-agent in $MSB_HOME/bin")
	return 0
}
