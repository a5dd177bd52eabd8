// SPDX-License-Identifier: Apache-2.0

// Package vmtest runs Go test binaries where a working KVM is: directly on
// the host when it has hardware virtualization ("native"), or inside an L1
// virtual machine that has one ("nested").
//
// The nested mode exists because the development and CI machines of this
// project expose a /dev/kvm that cannot run a real Linux guest (a software
// PVM backend): QEMU in software emulation (TCG) with AMD SVM emulated gives
// an L1 Linux (Debian's cloud kernel, fetched by l1.sh) whose kvm-amd module
// provides a real KVM. The harness builds an initramfs (package cpio) holding
// a small static /init (l1init), the KVM modules, the test binary and its
// files; /init runs the binary, prints its exit status on the serial console
// with a per-run nonce, and powers off. The harness streams the console live,
// returns the inner exit status, and kills QEMU when its deadline passes.
//
// QEMU is bookworm's 7.2; 10.0 from bookworm-backports (vmtest -qemu, or
// first on PATH) runs the harness as fast (sdkbench create → first exec,
// medians of 5, runs alternated on a quiet machine: 4.05 and 4.11 s with
// 7.2, 4.50 and 4.35 s with 10.0) and fails the same ways.
//
// The L1 CPU model is QEMU's -cpu value: DefaultCPUModel ("max"), or
// Config.CPUModel, vmtest -cpu, or $MSB_E2E_CPU; L1's kvm-amd parameters
// are DefaultKVMAMDParams, Config.KVMAMDParams or $MSB_E2E_KVM_AMD. Emulated
// nested SVM is not fully reliable, with QEMU 7.2 and 10.0, L1 kernels 6.1
// and 6.12, whatever the model: now and then the L1 and L2 states are
// exchanged across a VMRUN or #VMEXIT. Seen from both sides:
//
//   - L1 runs with the L2's GS base: the L1 kernel dies in the task that
//     runs KVM_RUN ("TASK stack guard page was hit" in exc_page_fault,
//     CR2 = the L2's per-CPU current_task, first fault reached through
//     native_irq_return_iret; "corrupted stack end detected inside
//     scheduler"), reported as ErrNoExitStatus;
//   - the L2 vCPU carries L1's registers: pkg/vmm's Machine.Inspect of a
//     sandbox that never answered showed rip 0xffffffffc06ea3a0 (L1's
//     module area), an rsp that is not canonical under the guest's 4-level
//     paging (L1 uses 5-level), and a cr3 above the guest's 128 MiB of RAM;
//     such a guest hangs or triple-faults. Six of the seven hangs on
//     record (2026-11-26, CI and benchmarks) showed an rip ending in 0xdcc
//     (0xffffffffc0751dcc, ...c059ddcc, ...c03a9dcc, ...c03a3dcc,
//     ...c066bdcc, ...c0694dcc): in the 6.1 kvm-amd.ko's core layout
//     .noinstr.text starts at 0xecd0, and 0xecd0 + 0xfc is the instruction
//     after __svm_vcpu_run's VMRUN. So L1's state at its VMRUN was saved
//     as the L2's;
//   - now and then L1 freezes while an L2 is stopped.
//
// The odds grow with the exits a run makes: 9p's stat of 10,000 files
// (about seven times virtio-fs's requests) never finished, virtio-fs's did.
// Neither an L1 of one vCPU (vmtest -cpus 1: L1 froze) nor raising a
// device's interrupts on the vCPU thread instead of another thread (9p
// still triple-faulted) avoided them.
//
// Dropping la57, or taking a named AMD model (EPYC-Rome,+svm,+npt) without
// la57, pku and vgif, failed as often (see DefaultCPUModel), vgif=0 more
// often (DefaultKVMAMDParams). Cheap reproducers: sdkbench with 11 sandbox
// boots per L1 (QEMU 10, runs interleaved: defaults on 6.1 passed 6 of 6,
// vgif=0 failed 3 of 5 on 6.1 and 2 of 5 on 6.12; with defaults the first
// ad hoc runs of the day still met one L1 panic and two hung guests in
// about 40 boots), and for the freeze, about one L1 run in four under
// QEMU 7.2:
//
//	vmtest -env MSB_E2E_STOP_STRESS=1 -file build/vmlinux -file build/guestinit \
//	    build/e2e.test -test.v -test.count=3 -test.run '^(TestStopDuringBoot|TestGuestEndings)$'
//
// A sandbox that does not answer within its boot timeout gets a diagnosis
// in its error (vCPU states and the sandbox process's goroutines, see
// pkg/sandbox), which tells these harness failures from our own.
//
// Tests read the slowdown factor the harness sets (Scale) so that their
// deadlines stay bounded without flaking under emulation, and skip with a
// reason through RequireKVM where no KVM is usable.
//
// Goroutines: Run starts one console reader per QEMU process and waits for
// it before returning.
package vmtest
