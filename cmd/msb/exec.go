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

func execCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	var env multiFlag
	fs.Var(&env, "env", "environment variable K=V (repeatable)")
	fs.Var(&env, "e", "environment variable (shorthand)")
	workdir := fs.String("workdir", "", "working directory")
	fs.StringVar(workdir, "w", "", "working directory (shorthand)")
	user := fs.String("user", "", "user (name, uid or user:group)")
	fs.StringVar(user, "u", "", "user (shorthand)")
	timeout := fs.Duration("timeout", 0, "kill the command after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 3 || rest[1] != "--" {
		fmt.Fprintln(os.Stderr, "usage: msb exec [flags] NAME -- CMD [ARG...]")
		return 2
	}
	name, argv := rest[0], rest[2:]
	envMap, err := keyValues("-env", env)
	if err != nil {
		return fail("exec: %v", err)
	}
	sb, release, err := openOrStart(ctx, name)
	if err != nil {
		return fail("exec: %v", err)
	}
	defer release()
	opts := []microsandbox.ExecOption{microsandbox.WithExecEnv(envMap)}
	if *workdir != "" {
		opts = append(opts, microsandbox.WithExecCwd(*workdir))
	}
	if *user != "" {
		opts = append(opts, microsandbox.WithExecUser(*user))
	}
	if *timeout > 0 {
		opts = append(opts, microsandbox.WithExecTimeout(*timeout))
	}
	out, err := sb.Exec(ctx, argv[0], argv[1:], opts...)
	return exitCode(out, err)
}

// openOrStart connects to the running sandbox name, or starts it when it
// is stopped; release closes the handle, stopping what it started.
func openOrStart(ctx context.Context, name string) (*microsandbox.Sandbox, func(), error) {
	h, err := microsandbox.GetSandbox(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	switch h.Status() {
	case microsandbox.SandboxStatusStopped, microsandbox.SandboxStatusCrashed:
		sb, err := microsandbox.StartSandbox(ctx, name)
		if err != nil {
			return nil, nil, err
		}
		return sb, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := sb.Stop(sctx); err != nil {
				fmt.Fprintf(os.Stderr, "msb: stop %s: %v\n", name, err)
			}
		}, nil
	}
	sb, err := h.Connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	return sb, func() { sb.Close() }, nil
}

// guestPath splits "NAME:/path" into the sandbox and the path; a host path
// gives ok false.
func guestPath(s string) (name, p string, ok bool) {
	name, p, ok = strings.Cut(s, ":")
	if !ok || name == "" || !strings.HasPrefix(p, "/") || strings.ContainsAny(name, "/") {
		return "", "", false
	}
	return name, p, true
}

func cpCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("cp", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: msb cp SRC DST (one of them NAME:/guest/path)")
		return 2
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	sn, sp, srcGuest := guestPath(src)
	dn, dp, dstGuest := guestPath(dst)
	if srcGuest == dstGuest {
		return fail("cp: exactly one of SRC and DST must be NAME:/path")
	}
	name := dn
	if srcGuest {
		name = sn
	}
	h, err := microsandbox.GetSandbox(ctx, name)
	if err != nil {
		return fail("cp: %v", err)
	}
	sb, err := h.Connect(ctx)
	if err != nil {
		return fail("cp: %v", err)
	}
	defer sb.Close()
	if srcGuest {
		err = sb.FS().CopyToHost(ctx, sp, dst)
	} else {
		err = sb.FS().CopyFromHost(ctx, src, dp)
	}
	if err != nil {
		return fail("cp: %v", err)
	}
	return 0
}

// metricsRow is one line of msb metrics.
type metricsRow struct {
	Name string `json:"name"`
	*microsandbox.Metrics
}

func metricsCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("metrics", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	format := fs.String("format", "", `"json" prints JSON`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var all map[string]*microsandbox.Metrics
	if fs.NArg() == 1 {
		h, err := microsandbox.GetSandbox(ctx, fs.Arg(0))
		if err != nil {
			return fail("metrics: %v", err)
		}
		var m *microsandbox.Metrics
		for range 20 { // the first sample comes a second after boot
			if m, err = h.Metrics(ctx); !microsandbox.IsKind(err, microsandbox.ErrMetricsUnavailable) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return fail("metrics: %v", err)
		}
		all = map[string]*microsandbox.Metrics{fs.Arg(0): m}
	} else {
		var err error
		if all, err = microsandbox.AllSandboxMetrics(ctx); err != nil {
			return fail("metrics: %v", err)
		}
	}
	rows := make([]metricsRow, 0, len(all))
	for n, m := range all {
		rows = append(rows, metricsRow{n, m})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	if *asJSON || *format == "json" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCPU%\tMEMORY\tLIMIT\tDISK R/W\tNET RX/TX\tUPTIME")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\t%s/%s\t%s/%s\t%s\n", r.Name, r.CPUPercent,
			bytesHuman(r.MemoryBytes), bytesHuman(r.MemoryLimitBytes),
			bytesHuman(r.DiskReadBytes), bytesHuman(r.DiskWriteBytes),
			bytesHuman(r.NetRxBytes), bytesHuman(r.NetTxBytes), r.Uptime)
	}
	tw.Flush()
	return 0
}

func bytesHuman(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shellCmd attaches the terminal to a shell (or CMD) in a running sandbox.
func shellCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("shell", flag.ContinueOnError)
	user := fs.String("user", "", "user (name, uid or user:group)")
	workdir := fs.String("workdir", "", "working directory")
	detachKeys := fs.String("detach-keys", "ctrl-]", "key sequence that detaches")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 1 || len(rest) > 1 && (rest[1] != "--" || len(rest) < 3) {
		fmt.Fprintln(os.Stderr, "usage: msb shell [flags] NAME [-- CMD [ARG...]]")
		return 2
	}
	h, err := microsandbox.GetSandbox(ctx, rest[0])
	if err != nil {
		return fail("shell: %v", err)
	}
	sb, err := h.Connect(ctx)
	if err != nil {
		return fail("shell: %v", err)
	}
	defer sb.Close()
	opts := []microsandbox.AttachOption{microsandbox.WithAttachDetachKeys(*detachKeys)}
	if *user != "" {
		opts = append(opts, microsandbox.WithAttachUser(*user))
	}
	if *workdir != "" {
		opts = append(opts, microsandbox.WithAttachCwd(*workdir))
	}
	var code int
	if len(rest) > 2 {
		code, err = sb.AttachWith(ctx, rest[2], rest[3:], opts...)
	} else {
		code, err = sb.AttachShell(ctx, opts...)
	}
	if err != nil {
		return fail("shell: %v", err)
	}
	if code < 0 {
		return 0 // detached, or ended by a signal
	}
	return code
}
