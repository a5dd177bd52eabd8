#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds the guest kernel (vmlinux) from Debian's linux-source-6.12 package:
# tinyconfig + kernel/microvm.fragment, then checks that every option of the
# fragment holds in the final .config before compiling.
#
# The result is cached under $XDG_CACHE_HOME/microsandbox-go/kernel/<key>/,
# key = sha256(fragment, this script, source package version), and copied to
# the path given as $1 (default build/vmlinux). A cache hit costs no build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build/vmlinux}
fragment=$here/microvm.fragment
pkg=linux-source-6.12
cache=${XDG_CACHE_HOME:-$HOME/.cache}/microsandbox-go
jobs=$(( $(nproc) + 1 ))

version=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
	echo "kernel: apt knows no candidate for $pkg; run 'apt-get update' (as root) and retry" >&2
	exit 1
fi
key=$(cat "$fragment" "$0" <(echo "$pkg=$version") | sha256sum | cut -c1-16)
dest=$cache/kernel/$key

install_result() {
	mkdir -p "$(dirname "$out")"
	cp "$dest/vmlinux" "$out.tmp" && mv "$out.tmp" "$out"
	cp "$dest/config" "$(dirname "$out")/vmlinux.config"
}

if [ -f "$dest/vmlinux" ]; then
	install_result
	echo "kernel: cached $pkg $version ($key) -> $out"
	exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/msb-kernel.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Source: the package is downloaded and unpacked, never installed.
debs=$cache/debs
mkdir -p "$debs"
deb=$(ls "$debs"/${pkg}_"${version//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
	echo "kernel: downloading $pkg=$version"
	(cd "$debs" && apt-get download -q "$pkg=$version")
	deb=$(ls "$debs"/${pkg}_*.deb | head -n1)
fi
dpkg-deb -x "$deb" "$work/pkg"
tarball=$(ls "$work"/pkg/usr/src/linux-source-6.12.tar.* | head -n1)
echo "kernel: unpacking $(basename "$tarball")"
tar -xf "$tarball" -C "$work"
src=$(ls -d "$work"/linux-source-6.12)

# 2. Configure: tinyconfig, merge the fragment, resolve dependencies.
make -C "$src" -s tinyconfig
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >/dev/null
make -C "$src" -s olddefconfig

# 3. Check: every option of the fragment must be in the final .config as written.
missing=0
while IFS= read -r line; do
	case "$line" in CONFIG_*=*) ;; *) continue ;; esac
	opt=${line%%=*} want=${line#*=}
	if [ "$want" = n ]; then
		if grep -q "^$opt=" "$src/.config"; then
			echo "kernel: $opt should be unset, .config has: $(grep "^$opt=" "$src/.config")" >&2
			missing=1
		fi
	elif ! grep -qx "$opt=$want" "$src/.config"; then
		echo "kernel: $opt=$want not in final .config (unmet dependency?): $(grep -E "^(# )?$opt[= ]" "$src/.config" || echo absent)" >&2
		missing=1
	fi
done <"$fragment"
if [ "$missing" != 0 ]; then
	echo "kernel: fragment not satisfied; fix kernel/microvm.fragment" >&2
	exit 1
fi

# 4. Build.
echo "kernel: building vmlinux with $jobs jobs (about 11 minutes on 2 cores)"
make -C "$src" -s -j"$jobs" vmlinux KBUILD_BUILD_USER=msb KBUILD_BUILD_HOST=msb

mkdir -p "$dest.tmp"
cp "$src/vmlinux" "$dest.tmp/vmlinux"
cp "$src/.config" "$dest.tmp/config"
echo "$pkg=$version" >"$dest.tmp/source"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
install_result
echo "kernel: built $pkg $version ($key) -> $out"
