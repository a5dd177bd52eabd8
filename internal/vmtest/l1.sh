#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Fetches the L1 kernel for the nested test harness: Debian's cloud kernel
# (linux-image-*-cloud-amd64, through apt-get download; never installed) and
# the modules that give it a working /dev/kvm (irqbypass, kvm, kvm-amd).
# Cached under $XDG_CACHE_HOME/microsandbox-go/l1/<package version>/ and
# copied to $1 (default build/l1): vmlinuz, modules/*.ko, version.
#
# The kernel comes from $L1_SUITE when set and known to apt (for example
# bookworm-backports, which .ci/run adds, for 6.12), else from the default
# candidate (bookworm's 6.1); internal/vmtest/doc.go compares them.
set -euo pipefail

out=${1:-build/l1}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/microsandbox-go
meta=linux-image-cloud-amd64
suite=${L1_SUITE:-}

target=()
if [ -n "$suite" ] && apt-cache policy "$meta" 2>/dev/null | grep -q " $suite/"; then
	target=(-t "$suite")
fi
pkg=$(apt-cache depends "${target[@]}" "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
version=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$pkg" ] || [ -z "$version" ] || [ "$version" = "(none)" ]; then
	echo "l1: apt knows no candidate for $meta; run 'apt-get update' (as root) and retry" >&2
	exit 1
fi
dest=$cache/l1/$pkg-$version

if [ ! -f "$dest/vmlinuz" ]; then
	work=$(mktemp -d "${TMPDIR:-/tmp}/msb-l1.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	echo "l1: downloading $pkg=$version"
	(cd "$work" && apt-get download -q "$pkg=$version" 2>&1 | grep -v 'unsandboxed as root' || true)
	dpkg-deb -x "$work"/"$pkg"_*.deb "$work/x"
	mkdir -p "$dest.tmp/modules"
	cp "$work"/x/boot/vmlinuz-* "$dest.tmp/vmlinuz"
	for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-amd; do
		src=$(echo "$work"/x/lib/modules/*/kernel/$m.ko)
		if [ -f "$src" ]; then
			cp "$src" "$dest.tmp/modules/"
		else # newer packages compress their modules
			xz -dc "$src.xz" >"$dest.tmp/modules/$(basename "$m").ko"
		fi
	done
	echo "$pkg=$version" >"$dest.tmp/version"
	rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi

rm -rf "$out.tmp" && mkdir -p "$(dirname "$out")"
cp -r "$dest" "$out.tmp" && rm -rf "$out" && mv "$out.tmp" "$out"
echo "l1: $pkg $version -> $out"
