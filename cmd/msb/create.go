// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
)

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// sandboxFlags are the flags run and create share.
type sandboxFlags struct {
	name, workdir, user, hostname, memory string
	cpus                                  uint
	env, labels, ports, volumes           multiFlag
	noNet, replace                        bool
	maxDuration                           time.Duration
}

func (f *sandboxFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "sandbox name")
	fs.StringVar(&f.name, "n", "", "sandbox name (shorthand)")
	fs.StringVar(&f.memory, "memory", "", "guest memory: MiB, or with a unit (512M, 1G); default 512M")
	fs.StringVar(&f.memory, "m", "", "guest memory (shorthand)")
	fs.UintVar(&f.cpus, "cpus", 0, "vCPUs (default 1)")
	fs.UintVar(&f.cpus, "c", 0, "vCPUs (shorthand)")
	fs.StringVar(&f.workdir, "workdir", "", "default working directory")
	fs.StringVar(&f.workdir, "w", "", "default working directory (shorthand)")
	fs.StringVar(&f.user, "user", "", "default user (name, uid or user:group)")
	fs.StringVar(&f.user, "u", "", "default user (shorthand)")
	fs.StringVar(&f.hostname, "hostname", "", "guest host name")
	fs.Var(&f.env, "env", "environment variable K=V (repeatable)")
	fs.Var(&f.env, "e", "environment variable K=V (shorthand)")
	fs.Var(&f.labels, "label", "label K=V (repeatable)")
	fs.Var(&f.ports, "port", "publish a port: HOST:GUEST or BIND:HOST:GUEST, /udp suffix for UDP (repeatable)")
	fs.Var(&f.ports, "p", "publish a port (shorthand)")
	fs.Var(&f.volumes, "volume", "mount HOST:GUEST[:ro]: HOST is a directory (a path with '/' or starting with '.') or a named volume (repeatable)")
	fs.Var(&f.volumes, "v", "mount a volume (shorthand)")
	fs.BoolVar(&f.noNet, "no-net", false, "no network: loopback only")
	fs.BoolVar(&f.replace, "replace", false, "replace an existing sandbox of the same name")
	fs.DurationVar(&f.maxDuration, "max-duration", 0, "stop the sandbox after this long (30s, 5m, 1h)")
}

// options converts the flags.
func (f *sandboxFlags) options(image string) ([]microsandbox.SandboxOption, error) {
	opts := []microsandbox.SandboxOption{microsandbox.WithImage(image)}
	if f.memory != "" {
		mib, err := parseMiB(f.memory)
		if err != nil {
			return nil, err
		}
		opts = append(opts, microsandbox.WithMemory(mib))
	}
	if f.cpus > 255 {
		return nil, fmt.Errorf("-cpus %d: at most 255", f.cpus)
	}
	if f.cpus > 0 {
		opts = append(opts, microsandbox.WithCPUs(uint8(f.cpus)))
	}
	env, err := keyValues("-env", f.env)
	if err != nil {
		return nil, err
	}
	labels, err := keyValues("-label", f.labels)
	if err != nil {
		return nil, err
	}
	opts = append(opts, microsandbox.WithEnv(env), microsandbox.WithLabels(labels))
	if f.workdir != "" {
		opts = append(opts, microsandbox.WithWorkdir(f.workdir))
	}
	if f.user != "" {
		opts = append(opts, microsandbox.WithUser(f.user))
	}
	if f.hostname != "" {
		opts = append(opts, microsandbox.WithHostname(f.hostname))
	}
	for _, p := range f.ports {
		b, err := parsePort(p)
		if err != nil {
			return nil, err
		}
		opts = append(opts, microsandbox.WithPortBindings(b))
	}
	if len(f.volumes) > 0 {
		mounts := map[string]microsandbox.MountConfig{}
		for _, v := range f.volumes {
			guest, m, err := parseVolume(v)
			if err != nil {
				return nil, err
			}
			mounts[guest] = m
		}
		opts = append(opts, microsandbox.WithMounts(mounts))
	}
	if f.noNet {
		opts = append(opts, microsandbox.WithNetwork(microsandbox.NetworkPolicy.None()))
	}
	if f.replace {
		opts = append(opts, microsandbox.WithReplace())
	}
	if f.maxDuration > 0 {
		opts = append(opts, microsandbox.WithMaxDuration(f.maxDuration))
	}
	return opts, nil
}

// parseVolume parses -volume HOST:GUEST[:ro|:rw]: HOST with a '/' or a
// leading '.' is a host directory, anything else a named volume.
func parseVolume(s string) (string, microsandbox.MountConfig, error) {
	parts := strings.Split(s, ":")
	ro := false
	if n := len(parts); n == 3 && (parts[2] == "ro" || parts[2] == "rw") {
		ro, parts = parts[2] == "ro", parts[:2]
	}
	if len(parts) != 2 || parts[0] == "" || !strings.HasPrefix(parts[1], "/") {
		return "", microsandbox.MountConfig{}, fmt.Errorf("-volume %q: want HOST:GUEST[:ro] with an absolute GUEST path", s)
	}
	host, guest := parts[0], parts[1]
	opts := microsandbox.MountOptions{Readonly: ro}
	if strings.Contains(host, "/") || strings.HasPrefix(host, ".") {
		return guest, microsandbox.Mount.Bind(host, opts), nil
	}
	return guest, microsandbox.Mount.Named(host, opts), nil
}

func keyValues(flagName string, kvs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flagName, kv)
		}
		m[k] = v
	}
	return m, nil
}

// parseMiB parses "512", "512M", "1G", "1GiB" into MiB.
func parseMiB(s string) (uint32, error) {
	num := strings.TrimRight(strings.ToUpper(s), "IB")
	mult := uint64(1)
	switch {
	case strings.HasSuffix(num, "G"):
		mult, num = 1024, strings.TrimSuffix(num, "G")
	case strings.HasSuffix(num, "M"):
		num = strings.TrimSuffix(num, "M")
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n == 0 || n*mult > 1<<20 {
		return 0, fmt.Errorf("memory %q: want MiB (512), or 512M, 2G; at most 1T", s)
	}
	return uint32(n * mult), nil
}

// parsePort parses HOST:GUEST or BIND:HOST:GUEST with an optional /udp or
// /tcp suffix.
func parsePort(s string) (microsandbox.PortBinding, error) {
	var b microsandbox.PortBinding
	spec, proto, _ := strings.Cut(s, "/")
	switch proto {
	case "", "tcp":
		b.Protocol = microsandbox.PolicyProtocolTCP
	case "udp":
		b.Protocol = microsandbox.PolicyProtocolUDP
	default:
		return b, fmt.Errorf("port %q: protocol %q: want tcp or udp", s, proto)
	}
	parts := strings.Split(spec, ":")
	if len(parts) == 3 {
		b.Bind, parts = parts[0], parts[1:]
	}
	if len(parts) != 2 {
		return b, fmt.Errorf("port %q: want HOST:GUEST or BIND:HOST:GUEST", s)
	}
	hp, err1 := strconv.ParseUint(parts[0], 10, 16)
	gp, err2 := strconv.ParseUint(parts[1], 10, 16)
	if err1 != nil || err2 != nil || gp == 0 {
		return b, fmt.Errorf("port %q: ports are 1 to 65535", s)
	}
	b.HostPort, b.GuestPort = uint16(hp), uint16(gp)
	return b, nil
}

func createCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("create", flag.ContinueOnError)
	var sf sandboxFlags
	sf.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: msb create [flags] IMAGE")
		return 2
	}
	opts, err := sf.options(fs.Arg(0))
	if err != nil {
		return fail("create: %v", err)
	}
	name := sf.name
	if name == "" {
		name = "msb-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	sb, err := microsandbox.CreateSandbox(ctx, name, append(opts, microsandbox.WithDetached())...)
	if err != nil {
		return fail("create: %v", err)
	}
	if err := sb.Detach(ctx); err != nil {
		return fail("create: %v", err)
	}
	fmt.Println(name)
	return 0
}

func runCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var sf sandboxFlags
	sf.register(fs)
	timeout := fs.Duration("timeout", 0, "kill the command after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 1 || len(rest) > 1 && rest[1] != "--" {
		fmt.Fprintln(os.Stderr, "usage: msb run [flags] IMAGE [-- CMD [ARG...]]")
		return 2
	}
	var argv []string
	if len(rest) > 2 {
		argv = rest[2:]
	}
	opts, err := sf.options(rest[0])
	if err != nil {
		return fail("run: %v", err)
	}
	name := sf.name
	if name == "" {
		name = "msb-run-" + strconv.Itoa(os.Getpid())
		opts = append(opts, microsandbox.WithEphemeral(true))
	} else if _, err := microsandbox.GetSandbox(ctx, name); err == nil && !sf.replace {
		// An existing named sandbox is reused: run the command in it
		// (starting it for the run when it is stopped).
		sb, release, err := openOrStart(ctx, name)
		if err != nil {
			return fail("run: %v", err)
		}
		defer release()
		return runIn(ctx, sb, argv, *timeout)
	}
	sb, err := microsandbox.CreateSandbox(ctx, name, opts...)
	if err != nil {
		return fail("create: %v", err)
	}
	code := runIn(ctx, sb, argv, *timeout)
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = sb.Stop(sctx)
	if sf.name == "" {
		err = errors.Join(err, ignoreNotFound(microsandbox.RemoveSandbox(sctx, name)))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "msb: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// runIn runs argv (the default command when empty) in sb and returns the
// CLI's exit code.
func runIn(ctx context.Context, sb *microsandbox.Sandbox, argv []string, timeout time.Duration) int {
	var eopts []microsandbox.ExecOption
	if timeout > 0 {
		eopts = append(eopts, microsandbox.WithExecTimeout(timeout))
	}
	var out *microsandbox.ExecOutput
	var err error
	if len(argv) == 0 {
		out, err = sb.ExecDefault(ctx, eopts...)
	} else {
		out, err = sb.Exec(ctx, argv[0], argv[1:], eopts...)
	}
	return exitCode(out, err)
}

func ignoreNotFound(err error) error {
	if microsandbox.IsKind(err, microsandbox.ErrSandboxNotFound) {
		return nil
	}
	return err
}

// exitCode writes a collected exec's output and returns the CLI's exit
// code: the command's, 127 when it did not start, 137 when a signal ended
// it, 1 for other errors.
func exitCode(out *microsandbox.ExecOutput, err error) int {
	if err != nil {
		fmt.Fprintf(os.Stderr, "msb: exec: %v\n", err)
		if microsandbox.IsKind(err, microsandbox.ErrExecFailed) {
			return 127
		}
		return 1
	}
	os.Stdout.Write(out.StdoutBytes())
	os.Stderr.Write(out.StderrBytes())
	if out.ExitCode() < 0 {
		return 137
	}
	return out.ExitCode()
}
