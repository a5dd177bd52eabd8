#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Prints the vmtest -file arguments that carry this host's QEMU (the binary,
# the libraries ldd lists, the dynamic loader and the microvm firmware) into
# the L1 VM under qemu-sysroot/, at their host paths. The L1 initramfs has no
# system libraries; bootbench runs QEMU through the copied loader.
set -euo pipefail
qemu=$(command -v qemu-system-x86_64)
{
	echo "$qemu"
	ldd "$qemu" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'
} | sort -u | while read -r f; do
	printf -- '-file %s:qemu-sysroot%s ' "$f" "$f"
done
# Firmware goes where the peer's -L points (tests/benchpeer boots qboot).
for f in qboot.rom pvh.bin linuxboot_dma.bin; do
	for d in /usr/share/qemu /usr/share/seabios; do
		if [ -e "$d/$f" ]; then
			printf -- '-file %s:qemu-sysroot/usr/share/qemu/%s ' "$(readlink -f "$d/$f")" "$f"
			break
		fi
	done
done
