#!/bin/sh
# pvabi-domu-run: runs in dom0 (installed by scripts/xen/setup.sh as /usr/sbin/pvabi-domu-run).
# Boots an unprivileged PV (default) or PVH domU with `xl create`, the same Linux kernel as dom0 and a small
# initramfs holding busybox, /domu/init and the given program; the program runs there with
# /dev/xen/xenbus as its xenstore connection. The domU console (program output between marker
# lines) is printed on stdout; the exit status is the program's, or 125 when the domU did not
# run it.
#
# Usage: pvabi-domu-run [--type pv|pvh] [--memory MB] [--timeout SECONDS] BINARY [ARGS...]
set -u
mem=256
limit=120
type=pv
while :; do
    case "${1:-}" in
        --memory) mem=$2; shift 2 ;;
        --timeout) limit=$2; shift 2 ;;
        --type) type=$2; shift 2 ;;
        *) break ;;
    esac
done
bin=${1:?usage: pvabi-domu-run [--type pv|pvh] [--memory MB] [--timeout SECONDS] BINARY [ARGS...]}
shift
w=$(mktemp -d /tmp/domu.XXXXXX)
mkdir -p "$w/root/bin" "$w/root/payload" "$w/root/proc" "$w/root/sys" "$w/root/dev" "$w/root/tmp"
cp /bin/busybox "$w/root/bin/busybox"
cp /domu/init "$w/root/init"
# The Xen device modules, so that the program can use /dev/xen/{evtchn,gntalloc,gntdev}.
mkdir -p "$w/root/modules"
cp /modules/xen-evtchn.ko /modules/xen-gntalloc.ko /modules/xen-gntdev.ko "$w/root/modules/"
cp "$bin" "$w/root/payload/run"
chmod 755 "$w/root/init" "$w/root/payload/run"
: >"$w/root/payload/args"
for a in "$@"; do printf '%s\n' "$a" >>"$w/root/payload/args"; done
(cd "$w/root" && find . | cpio -o -H newc 2>/dev/null) >"$w/initrd.cpio"
cat >"$w/domu.cfg" <<CFG
name = "pvabi-domu"
type = "$type"
kernel = "/domu/vmlinuz"
ramdisk = "$w/initrd.cpio"
extra = "console=hvc0 loglevel=3"
memory = $mem
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "destroy"
CFG
log=/var/log/xen/console/guest-pvabi-domu.log
rm -f "$log"
start=$(date +%s)
if ! xl create "$w/domu.cfg" >"$w/xl.out" 2>&1; then
    echo "pvabi-domu-run: xl create failed:" >&2
    cat "$w/xl.out" >&2
    rm -rf "$w"
    exit 125
fi
# xl's background process destroys the domain when it powers off.
while xl domid pvabi-domu >/dev/null 2>&1; do
    if [ $(($(date +%s) - start)) -gt "$limit" ]; then
        echo "pvabi-domu-run: the domU did not finish within ${limit}s" >&2
        xl destroy pvabi-domu >/dev/null 2>&1
        break
    fi
    sleep 0.2
done
tr -d '\r' <"$log" >"$w/clean" 2>/dev/null
rc=$(sed -n 's/^PVABI-DOMU-RESULT rc=\([0-9]*\).*$/\1/p' "$w/clean" | tail -n1)
if [ -z "$rc" ]; then
    echo "pvabi-domu-run: the domU did not run the program; console tail:" >&2
    tail -n 30 "$w/clean" >&2
    rm -rf "$w"
    exit 125
fi
sed -n '/^PVABI-DOMU-BEGIN/,/^PVABI-DOMU-RESULT/p' "$w/clean" | sed '1d;$d'
rm -rf "$w"
exit "$rc"
