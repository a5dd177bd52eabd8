// SPDX-License-Identifier: Apache-2.0

package microsandbox

import (
	"context"
	"time"

	"github.com/microsandbox-go/microsandbox/pkg/sandbox"
)

// Metrics is one sample of a running sandbox.
type Metrics struct {
	// CPUPercent is the vCPU threads' use over the last second, in percent
	// of all host CPUs.
	CPUPercent float64
	// VCPUTimeNs is the cumulative CPU time of the vCPU threads.
	VCPUTimeNs uint64
	// MemoryBytes is the guest's used memory (total minus available).
	MemoryBytes uint64
	// MemoryAvailableBytes is the guest's available memory.
	MemoryAvailableBytes *uint64
	// MemoryHostResidentBytes is the sandbox process's resident memory.
	MemoryHostResidentBytes *uint64
	// MemoryLimitBytes is the configured guest memory.
	MemoryLimitBytes uint64
	// DiskReadBytes and DiskWriteBytes count the block devices' traffic.
	DiskReadBytes, DiskWriteBytes uint64
	// NetRxBytes (to the guest) and NetTxBytes (from the guest) count the
	// NIC's frames.
	NetRxBytes, NetTxBytes uint64
	// UpperUsedBytes and UpperFreeBytes are the guest's root file system
	// usage.
	UpperUsedBytes, UpperFreeBytes *uint64
	// Uptime is the time since boot, in whole seconds (as upstream).
	Uptime time.Duration
	// Timestamp is when the sample was taken.
	Timestamp time.Time
}

// Metrics samples the sandbox. Right after boot, before the first sample
// of the sandbox process, it fails with ErrMetricsUnavailable; retry.
func (s *Sandbox) Metrics(ctx context.Context) (*Metrics, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	m, err := s.sb.Metrics(ctx)
	if err != nil {
		return nil, wrap(err)
	}
	return convertMetrics(m), nil
}

func convertMetrics(m *sandbox.Metrics) *Metrics {
	g := m.Guest
	avail, rss := g.MemoryAvailableBytes, m.HostResidentBytes
	used := uint64(0)
	if g.MemoryTotalBytes > g.MemoryAvailableBytes {
		used = g.MemoryTotalBytes - g.MemoryAvailableBytes
	}
	diskUsed := uint64(0)
	if g.DiskTotalBytes > g.DiskFreeBytes {
		diskUsed = g.DiskTotalBytes - g.DiskFreeBytes
	}
	diskFree := g.DiskAvailableBytes
	return &Metrics{
		CPUPercent: m.CPUPercent, VCPUTimeNs: uint64(m.VCPUTime),
		MemoryBytes: used, MemoryAvailableBytes: &avail, MemoryHostResidentBytes: &rss,
		MemoryLimitBytes: m.MemoryLimitBytes,
		DiskReadBytes:    m.DiskReadBytes, DiskWriteBytes: m.DiskWriteBytes,
		NetRxBytes: m.NetRxBytes, NetTxBytes: m.NetTxBytes,
		UpperUsedBytes: &diskUsed, UpperFreeBytes: &diskFree,
		Uptime:    m.Uptime.Truncate(time.Second),
		Timestamp: time.Now(),
	}
}

// MetricsStreamHandle delivers samples on an interval.
type MetricsStreamHandle struct {
	s        *Sandbox
	interval time.Duration
	next     time.Time
	closed   bool
}

// MetricsStream samples the sandbox every interval (rounded up to a
// millisecond; at least 1 ms).
func (s *Sandbox) MetricsStream(ctx context.Context, interval time.Duration) (*MetricsStreamHandle, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	interval = max(ceilDuration(interval, time.Millisecond), time.Millisecond)
	return &MetricsStreamHandle{s: s, interval: interval}, nil
}

// Recv waits for the next sample; nil, nil once the sandbox stopped or
// the stream was closed. A sample that is not ready yet (right after
// boot) is retried until ctx ends.
func (h *MetricsStreamHandle) Recv(ctx context.Context) (*Metrics, error) {
	for {
		if h.closed {
			return nil, nil
		}
		if d := time.Until(h.next); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, wrap(ctx.Err())
			case <-t.C:
			}
		}
		h.next = time.Now().Add(h.interval)
		m, err := h.s.Metrics(ctx)
		switch {
		case err == nil:
			return m, nil
		case IsKind(err, ErrMetricsUnavailable):
			continue
		case IsKind(err, ErrSandboxNotRunning), IsKind(err, ErrInvalidHandle):
			return nil, nil
		}
		return nil, err
	}
}

// Close ends the stream.
func (h *MetricsStreamHandle) Close() error {
	h.closed = true
	return nil
}

// AllSandboxMetrics samples every running (or draining) sandbox of this
// MSB_HOME, keyed by name. Sandboxes that stop meanwhile are left out.
func AllSandboxMetrics(ctx context.Context) (map[string]*Metrics, error) {
	if err := ctx.Err(); err != nil {
		return nil, wrap(err)
	}
	rt := sandbox.DefaultRuntime()
	all, err := sandbox.List(rt)
	if err != nil {
		return nil, wrap(err)
	}
	out := map[string]*Metrics{}
	for _, st := range all {
		if st.Status != sandbox.StatusRunning && st.Status != sandbox.StatusDraining {
			continue
		}
		sb, err := sandbox.Open(ctx, rt, st.Name)
		if err != nil {
			continue
		}
		m, err := sb.Metrics(ctx)
		sb.Close()
		if err == nil {
			out[st.Name] = convertMetrics(m)
		}
	}
	return out, nil
}
