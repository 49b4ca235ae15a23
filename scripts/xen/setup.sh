#!/usr/bin/env bash
# Installs and prepares what scripts/xen/run-in-dom0.sh needs to boot a real Xen hypervisor with a
# Linux dom0 under qemu-system-x86_64, and caches the artefacts.
#
# Idempotent: every step checks whether its result is already there. Steps:
#   1. Debian packages: xen-hypervisor-4.17-amd64, xen-utils-4.17, qemu-system-x86 (bookworm's
#      7.2, which needs qemu-utils at the same version: a preinstalled newer qemu-utils is
#      downgraded), busybox-static.
#   2. The dom0 kernel: `apt-get download` of the linux-image-6.1.0-N-amd64 package that
#      linux-image-amd64 depends on, unpacked with `dpkg-deb -x` (not installed).
#   3. The hypervisor as a 32-bit ELF (QEMU's multiboot loader cannot take the gzip file).
#   4. The base initramfs (busybox, xenstored, the xenstore client, their shared libraries and
#      ld-linux, the Xen kernel modules, /init from scripts/xen/dom0-init.sh). run-in-dom0.sh
#      appends a second cpio archive with the payload.
#
# Environment:
#   PVABI_XEN_CACHE  cache directory (default /var/cache/pvabi-xen)
#   PVABI_XEN_NO_INSTALL=1  never call apt-get; fail if something is missing
#
# Prints one `pvabi-xen-setup: <step> <seconds>s` line per step and `pvabi-xen-setup: ready <dir>`
# at the end. Exit status 0 when ready, non-zero otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PVABI_XEN_CACHE:-/var/cache/pvabi-xen}"
xen_version=4.17
export DEBIAN_FRONTEND=noninteractive

log() { echo "pvabi-xen-setup: $*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
step_time() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true)" = "ii " ]
}

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq >&2
        apt_updated=1
    fi
}

# --- 1. packages -------------------------------------------------------------------------------
t=$(now)
missing=()
for p in "xen-hypervisor-$xen_version-amd64" "xen-utils-$xen_version" qemu-system-x86 busybox-static; do
    pkg_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    [ "${PVABI_XEN_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${missing[*]} (PVABI_XEN_NO_INSTALL=1)"
    command -v apt-get >/dev/null || die "missing packages: ${missing[*]} and no apt-get"
    log "installing ${missing[*]}"
    apt_update_once
    args=()
    for p in "${missing[@]}"; do
        if [ "$p" = qemu-system-x86 ]; then
            # qemu-system-x86 wants the qemu-utils of its own version; pin both to the candidate.
            v="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')"
            [ -n "$v" ] && [ "$v" != "(none)" ] || die "no installation candidate for qemu-system-x86"
            args+=("qemu-system-x86=$v" "qemu-utils=$v")
        else
            args+=("$p")
        fi
    done
    apt-get install -y -q --no-install-recommends --allow-downgrades "${args[@]}" >&2
fi
echo "pvabi-xen-setup: packages $(step_time "$t")s"

xenbin="/usr/lib/xen-$xen_version/bin"
[ -x "$xenbin/xenstored" ] || die "$xenbin/xenstored missing after install"
[ -f "/boot/xen-$xen_version-amd64.gz" ] || die "/boot/xen-$xen_version-amd64.gz missing after install"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing after install"
[ -x /bin/busybox ] || die "/bin/busybox missing after install"

# --- 2. dom0 kernel ----------------------------------------------------------------------------
t=$(now)
kdir="$cache/kernel"
if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
    [ "${PVABI_XEN_NO_INSTALL:-0}" = 1 ] && die "dom0 kernel not cached (PVABI_XEN_NO_INSTALL=1)"
    apt_update_once
    kpkg="$(apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ && !p { p = $2 } END { print p }')"
    [ -n "$kpkg" ] || die "cannot find the kernel package linux-image-amd64 depends on"
    log "downloading $kpkg"
    tmp="$(mktemp -d "$cache/kernel.XXXXXX")"
    (cd "$tmp" && apt-get download -q "$kpkg" >&2)
    mkdir -p "$tmp/root"
    dpkg-deb -x "$tmp"/*.deb "$tmp/root"
    # Keep only what the set-up uses: the kernel image and the Xen device modules.
    find "$tmp/root/lib/modules" -mindepth 1 -maxdepth 1 -type d | while read -r m; do
        find "$m" -mindepth 1 -maxdepth 1 ! -name kernel -exec rm -rf {} +
        find "$m/kernel" -mindepth 1 -maxdepth 1 ! -name drivers -exec rm -rf {} +
        find "$m/kernel/drivers" -mindepth 1 -maxdepth 1 ! -name xen -exec rm -rf {} +
    done
    rm -rf "$tmp/root/usr" "$tmp/root/etc"
    rm -rf "$kdir"
    mv "$tmp/root" "$kdir"
    rm -rf "$tmp"
fi
kernels=("$kdir"/boot/vmlinuz-*)
vmlinuz="${kernels[0]}"
kver="${vmlinuz##*/vmlinuz-}"
ln -sf "$vmlinuz" "$cache/vmlinuz"
echo "pvabi-xen-setup: kernel $(step_time "$t")s"

# --- 3. hypervisor -----------------------------------------------------------------------------
t=$(now)
if [ ! -s "$cache/xen" ] || [ "/boot/xen-$xen_version-amd64.gz" -nt "$cache/xen" ]; then
    zcat "/boot/xen-$xen_version-amd64.gz" >"$cache/xen.tmp"
    mv "$cache/xen.tmp" "$cache/xen"
fi
echo "pvabi-xen-setup: hypervisor $(step_time "$t")s"

# --- 4. base initramfs -------------------------------------------------------------------------
t=$(now)
# Rebuilt when this script, the init script, the kernel or the Xen tools change.
stamp="$( (cat "$here/setup.sh" "$here/dom0-init.sh" "$here/domu-run.sh" "$here/domu-init.sh" "$here/pvh-run.sh"; echo "$kver";
    dpkg-query -W -f='${Version}' "xen-utils-$xen_version" busybox-static) | sha256sum | cut -c1-16)"
if [ ! -s "$cache/initrd-base.cpio.gz" ] || [ "$(cat "$cache/initrd-base.stamp" 2>/dev/null)" != "$stamp" ]; then
    root="$(mktemp -d "$cache/initrd.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,dev,proc,sys,tmp,run,var/lib/xenstored,var/log/xen,etc,modules,payload}
    ln -s ../run "$root/var/run"
    cp /bin/busybox "$root/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
    done
    # xenstored, the xenstore client (one binary, dispatching on its name), the toolstack parts
    # that create an unprivileged domU (xl, xenconsoled, xen-init-dom0) and their libraries.
    bins=("$xenbin/xenstored" /usr/bin/xenstore "$xenbin/xl" "$xenbin/xenconsoled" "$xenbin/xen-init-dom0")
    for b in "${bins[@]}"; do cp "$b" "$root/usr/sbin/"; done
    mkdir -p "$root/etc/xen" "$root/var/lib/xen" "$root/var/lock" "$root/domu"
    cp /etc/xen/xl.conf "$root/etc/xen/"
    # The domU: the same kernel, its init, and the script that boots it.
    cp "$vmlinuz" "$root/domu/vmlinuz"
    cp "$here/domu-init.sh" "$root/domu/init"
    cp "$here/domu-run.sh" "$root/usr/sbin/pvabi-domu-run"
    cp "$here/pvh-run.sh" "$root/usr/sbin/pvabi-pvh-run"
    chmod 755 "$root/domu/init" "$root/usr/sbin/pvabi-domu-run" "$root/usr/sbin/pvabi-pvh-run"
    for n in read write ls list rm exists chmod watch control; do
        ln -sf xenstore "$root/usr/sbin/xenstore-$n"
    done
    for lib in $(ldd "${bins[@]}" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | sort -u); do
        [ -f "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    mkdir -p "$root/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
    # glibc loads libgcc_s at run time for pthread_cancel (xl aborts without it).
    libgcc="$(ldconfig -p | awk '/libgcc_s.so.1 .*x86-64/ && !p { p = $NF } END { print p }')"
    [ -n "$libgcc" ] || die "libgcc_s.so.1 not found"
    mkdir -p "$root$(dirname "$libgcc")"
    cp -L "$libgcc" "$root$libgcc"
    # The Xen device modules, in load order.
    mdir="$kdir/lib/modules/$kver/kernel/drivers/xen"
    for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs/xenfs; do
        found=("$mdir/$m.ko"*)
        f="${found[0]}"
        [ -e "$f" ] || die "module $m not in $mdir"
        case "$f" in
            *.ko) cp "$f" "$root/modules/" ;;
            *.ko.xz) xz -dc "$f" >"$root/modules/$(basename "${f%.xz}")" ;;
            *.ko.zst) zstd -qdc "$f" >"$root/modules/$(basename "${f%.zst}")" ;;
            *) die "unknown module format $f" ;;
        esac
    done
    cp "$here/dom0-init.sh" "$root/init"
    chmod 755 "$root/init"
    (cd "$root" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$cache/initrd-base.cpio.gz.tmp"
    mv "$cache/initrd-base.cpio.gz.tmp" "$cache/initrd-base.cpio.gz"
    echo "$stamp" >"$cache/initrd-base.stamp"
    rm -rf "$root"
fi
echo "pvabi-xen-setup: initramfs $(step_time "$t")s"
echo "pvabi-xen-setup: ready $cache"
