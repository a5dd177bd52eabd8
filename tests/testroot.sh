#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds the end-to-end tests' root filesystem image ($1, default
# build/test-root.erofs): an EROFS image (mkfs.erofs from Debian's
# erofs-utils) of a small tree with Debian's static busybox
# (busybox-static, through apt-get download; never installed) as
# bin/busybox plus applet links, etc/passwd (root, nobody), etc/group and a
# marker file the tests check is never modified. The busybox binary is cached
# under $XDG_CACHE_HOME/microsandbox-go/testroot/<package version>/; the
# image is rebuilt only when that version or this script changes.
set -euo pipefail

out=${1:-build/test-root.erofs}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/microsandbox-go
pkg=busybox-static

command -v mkfs.erofs >/dev/null || { echo "testroot: mkfs.erofs missing: apt-get install -y erofs-utils" >&2; exit 1; }
version=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
	echo "testroot: apt knows no candidate for $pkg; run 'apt-get update' (as root) and retry" >&2
	exit 1
fi
dest=$cache/testroot/$pkg-${version//:/_}
stamp="$pkg=$version $(sha256sum "$0" | cut -c1-16)"

if [ ! -f "$dest/busybox" ]; then
	work=$(mktemp -d "${TMPDIR:-/tmp}/msb-testroot.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	echo "testroot: downloading $pkg=$version"
	(cd "$work" && apt-get download -q "$pkg=$version" 2>&1 | grep -v 'unsandboxed as root' || true)
	dpkg-deb -x "$work"/"$pkg"_*.deb "$work/x"
	mkdir -p "$dest.tmp"
	cp "$work/x/bin/busybox" "$dest.tmp/busybox"
	rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi

if [ -f "$out" ] && [ "$(cat "$out.version" 2>/dev/null)" = "$stamp" ]; then
	echo "testroot: $out is up to date ($pkg $version)"
	exit 0
fi

tree=$(mktemp -d "${TMPDIR:-/tmp}/msb-testroot-tree.XXXXXX")
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree"/{bin,etc,root,tmp,proc,sys,dev,run,home/nobody}
chmod 1777 "$tree/tmp"
chmod 0700 "$tree/root"
install -m 0755 "$dest/busybox" "$tree/bin/busybox"
for applet in sh ash echo cat id env sleep stty kill ls mkdir rm true false pwd printf wc head tail \
	sync poweroff reboot sed grep ps tty test touch setsid; do
	ln -s busybox "$tree/bin/$applet"
done
cat >"$tree/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home/nobody:/bin/sh
PASSWD
cat >"$tree/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
nogroup:x:65534:
GROUP
echo "from the image" >"$tree/etc/marker"

mkdir -p "$(dirname "$out")"
mkfs.erofs --quiet --all-root -T0 -U 6d736200-0000-4000-8000-000000000001 "$out.tmp" "$tree"
mv "$out.tmp" "$out"
echo "$stamp" >"$out.version"
echo "testroot: $pkg $version -> $out ($(stat -c %s "$out") bytes)"
