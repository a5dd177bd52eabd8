// SPDX-License-Identifier: Apache-2.0

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	microsandbox "github.com/microsandbox-go/microsandbox"
)

func pullCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	insecure := fs.Bool("insecure", false, "allow plain HTTP and unverified TLS")
	quiet := fs.Bool("q", false, "no progress")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: msb pull [--insecure] REF")
		return 2
	}
	var opts []microsandbox.PullOption
	if *insecure {
		opts = append(opts, microsandbox.WithPullInsecure())
	}
	var bars *progressBars
	if !*quiet {
		bars = &progressBars{last: map[int]string{}}
		opts = append(opts, microsandbox.WithPullProgress(bars.update))
	}
	d, err := microsandbox.Image.Pull(ctx, fs.Arg(0), opts...)
	if bars != nil {
		bars.finish()
	}
	if err != nil {
		return fail("pull: %v", err)
	}
	fmt.Printf("%s %s\n", d.Reference, d.Digest)
	return 0
}

// progressBars draws one line per layer on stderr, redrawn at most every
// 100 ms.
type progressBars struct {
	mu    sync.Mutex
	last  map[int]string
	drawn time.Time
	lines int
}

func (b *progressBars) update(p microsandbox.PullProgress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done) / float64(p.Total)
	}
	const width = 30
	filled := int(pct / 100 * width)
	layer := strings.TrimPrefix(p.Layer, "sha256:")
	if len(layer) > 12 {
		layer = layer[:12]
	}
	state := bytesHuman(uint64(p.Done)) + "/" + bytesHuman(uint64(p.Total))
	if p.Cached {
		state = "cached"
	}
	b.last[p.Index] = fmt.Sprintf("%s [%s%s] %5.1f%% %s", layer, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), pct, state)
	if p.Done < p.Total && time.Since(b.drawn) < 100*time.Millisecond {
		return
	}
	b.draw(p.Count)
}

func (b *progressBars) draw(count int) {
	b.drawn = time.Now()
	if b.lines > 0 {
		fmt.Fprintf(os.Stderr, "\x1b[%dA", b.lines) // back to the first bar
	}
	b.lines = 0
	for i := 0; i < count; i++ {
		fmt.Fprintf(os.Stderr, "\x1b[2K%s\n", b.last[i])
		b.lines++
	}
}

func (b *progressBars) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.last) > 0 {
		b.draw(len(b.last))
	}
}

func imagesCmd(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	format := fs.String("format", "", `"json" prints JSON`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	list, err := microsandbox.Image.List(ctx)
	if err != nil {
		return fail("images: %v", err)
	}
	if *asJSON || *format == "json" {
		if list == nil {
			list = []*microsandbox.ImageHandle{}
		}
		b, _ := json.MarshalIndent(list, "", "  ")
		fmt.Println(string(b))
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REFERENCE\tDIGEST\tSIZE\tLAYERS\tIN USE BY")
	for _, im := range list {
		fmt.Fprintf(tw, "%s\t%.19s\t%s\t%d\t%s\n", im.Reference, im.Digest, bytesHuman(uint64(im.Size)), im.Layers, strings.Join(im.InUseBy, ","))
	}
	tw.Flush()
	return 0
}

func rmiCmd(ctx context.Context, args []string) int {
	var force bool
	refs, ok := namesFlags("rmi", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&force, "force", false, "remove even when sandboxes hold the image")
		fs.BoolVar(&force, "f", false, "force (shorthand)")
	})
	if !ok {
		return 2
	}
	return eachName(refs, func(r string) error { return microsandbox.Image.Remove(ctx, r, force) })
}

func volumeCmd(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: msb volume create [--quota MiB] NAME | ls [--json] | rm NAME...")
		return 2
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("volume create", flag.ContinueOnError)
		quota := fs.Uint("quota", 0, "quota in MiB (0: unlimited)")
		var labels multiFlag
		fs.Var(&labels, "label", "label K=V (repeatable)")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		if fs.NArg() != 1 || *quota > 1<<32-1 {
			fmt.Fprintln(os.Stderr, "usage: msb volume create [--quota MiB] [--label K=V] NAME")
			return 2
		}
		l, err := keyValues("-label", labels)
		if err != nil {
			return fail("volume create: %v", err)
		}
		v, err := microsandbox.CreateVolume(ctx, fs.Arg(0), microsandbox.WithVolumeQuota(uint32(*quota)), microsandbox.WithVolumeLabels(l))
		if err != nil {
			return fail("volume create: %v", err)
		}
		fmt.Println(v.Name())
		return 0
	case "ls", "list":
		fs := flag.NewFlagSet("volume ls", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		vs, err := microsandbox.ListVolumes(ctx)
		if err != nil {
			return fail("volume ls: %v", err)
		}
		type row struct {
			Name     string  `json:"name"`
			Path     string  `json:"path"`
			QuotaMiB *uint32 `json:"quota_mib"`
			Used     uint64  `json:"used_bytes"`
		}
		rows := []row{}
		for _, v := range vs {
			rows = append(rows, row{v.Name(), v.Path(), v.QuotaMiB(), v.UsedBytes()})
		}
		if *asJSON {
			b, _ := json.MarshalIndent(rows, "", "  ")
			fmt.Println(string(b))
			return 0
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tUSED\tQUOTA\tPATH")
		for _, r := range rows {
			q := "-"
			if r.QuotaMiB != nil {
				q = fmt.Sprintf("%dMiB", *r.QuotaMiB)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, bytesHuman(r.Used), q, r.Path)
		}
		tw.Flush()
		return 0
	case "rm", "remove":
		names, ok := namesFlags("volume rm", args[1:], nil)
		if !ok {
			return 2
		}
		return eachName(names, func(n string) error { return microsandbox.RemoveVolume(ctx, n) })
	}
	return fail("volume: unknown subcommand %q (create, ls, rm)", args[0])
}
