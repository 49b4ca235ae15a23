#!/usr/bin/env bash
# Boots the real Xen hypervisor with a Linux dom0 under qemu-system-x86_64, starts the real
# xenstored in dom0, runs one statically linked program there and returns its output and exit
# status.
#
# Usage: run-in-dom0.sh [--xenstored-arg ARG]... [--timeout SECONDS] [--] BINARY [ARGS...]
#
#   --xenstored-arg ARG  one more argument for xenstored (repeat for several, e.g.
#                        `--xenstored-arg --entry-nb --xenstored-arg 40`)
#   --timeout SECONDS    hard limit for the whole VM run (default 300)
#
# Environment:
#   PVABI_XEN_CACHE    the directory scripts/xen/setup.sh filled (default /var/cache/pvabi-xen)
#   PVABI_XEN_ACCEL    tcg (default) or kvm (KVM fails on this kind of machine: Xen stops early
#                      with a KVM emulation failure)
#   PVABI_XEN_CPU      QEMU CPU model under TCG (default qemu64,+svm,+npt: NPT gives Xen HAP,
#                      which Debian's Xen needs for HVM and PVH domUs; it has no shadow paging)
#   PVABI_XEN_SMP      virtual CPUs of the machine and of dom0 (default 1: under TCG on a loaded
#                      2-core host one vCPU boots and runs a domU about twice as fast as two)
#   PVABI_XEN_VERBOSE  1: copy the whole serial console to stderr while it runs
#   PVABI_XEN_LOG      keep the serial console log at this path
#
# The program's stdout and stderr (merged, as the dom0 console carried them) are printed on
# stdout. Exit status: the program's own, or 124 when the VM hit the timeout, 125 when the set-up
# is missing or dom0 did not get as far as running the program (the console log tail then goes
# to stderr). The program runs in /payload of dom0's initramfs as root, with xenstored's socket
# at /run/xenstored/socket and /dev/xen/* present; `pvabi-domu-run` (scripts/xen/domu-run.sh)
# boots an unprivileged PV domU from there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PVABI_XEN_CACHE:-/var/cache/pvabi-xen}"
accel="${PVABI_XEN_ACCEL:-tcg}"
smp="${PVABI_XEN_SMP:-1}"
timeout_s=300
xsargs=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2; exit 125; }
fail() { echo "run-in-dom0: $*" >&2; exit 125; }

while [ $# -gt 0 ]; do
    case "$1" in
        --xenstored-arg) [ $# -ge 2 ] || usage; xsargs+=("$2"); shift 2 ;;
        --timeout) [ $# -ge 2 ] || usage; timeout_s="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || usage
binary="$1"
shift
[ -f "$binary" ] || fail "no such program: $binary"

for f in xen vmlinuz initrd-base.cpio.gz; do
    [ -e "$cache/$f" ] || fail "$cache/$f missing: run scripts/xen/setup.sh first"
done
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 missing: run scripts/xen/setup.sh first"
[ -x /bin/busybox ] || fail "/bin/busybox missing: run scripts/xen/setup.sh first"

for a in "$@" "${xsargs[@]+"${xsargs[@]}"}"; do
    case "$a" in *$'\n'*) fail "arguments must not contain newlines" ;; esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/pvabi-xen-run.XXXXXX")"
trap 'rm -rf "$work"' EXIT
nonce="$(tr -d '-' </proc/sys/kernel/random/uuid)"

# The payload: a second cpio archive the kernel unpacks over the base initramfs.
mkdir -p "$work/root/payload"
cp "$binary" "$work/root/payload/run"
chmod 755 "$work/root/payload/run"
echo "PVABI_NONCE=$nonce" >"$work/root/payload/env"
: >"$work/root/payload/args"
for a in "$@"; do printf '%s\n' "$a" >>"$work/root/payload/args"; done
: >"$work/root/payload/xenstored-args"
for a in "${xsargs[@]+"${xsargs[@]}"}"; do printf '%s\n' "$a" >>"$work/root/payload/xenstored-args"; done
(cd "$work/root" && find payload | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$work/payload.cpio.gz"
cat "$cache/initrd-base.cpio.gz" "$work/payload.cpio.gz" >"$work/initrd.gz"

case "$accel" in
    tcg) qaccel=(-accel tcg -cpu "${PVABI_XEN_CPU:-qemu64,+svm,+npt}") ;;
    kvm) qaccel=(-accel kvm -cpu host,-arch-capabilities) ;;
    *) fail "PVABI_XEN_ACCEL must be tcg or kvm, not $accel" ;;
esac

log="${PVABI_XEN_LOG:-$work/console.log}"
xen_cmdline="console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=$smp noreboot"
dom0_cmdline="console=hvc0 loglevel=3"
start=$(date +%s.%N)
set +e
if [ "${PVABI_XEN_VERBOSE:-0}" = 1 ]; then
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 "${qaccel[@]}" -m 2048 -smp "$smp" \
        -display none -monitor none -no-reboot -serial stdio \
        -kernel "$cache/xen" -append "$xen_cmdline" \
        -initrd "$cache/vmlinuz $dom0_cmdline,$work/initrd.gz" </dev/null 2>&1 | tee "$log" >&2
    qrc=${PIPESTATUS[0]}
else
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 "${qaccel[@]}" -m 2048 -smp "$smp" \
        -display none -monitor none -no-reboot -serial stdio \
        -kernel "$cache/xen" -append "$xen_cmdline" \
        -initrd "$cache/vmlinuz $dom0_cmdline,$work/initrd.gz" </dev/null >"$log" 2>&1
    qrc=$?
fi
set -e
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# Serial lines end in CR LF; Xen's own lines start with "(XEN)".
tr -d '\r' <"$log" >"$work/clean.log"
result="$(sed -n "s/^.*PVABI-XEN-RESULT $nonce rc=\([0-9]*\).*$/\1/p" "$work/clean.log" | tail -n1)"
if [ -z "$result" ]; then
    if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
        echo "run-in-dom0: timed out after ${timeout_s}s; console tail:" >&2
        tail -n 40 "$work/clean.log" >&2
        exit 124
    fi
    why="$(sed -n "s/^.*PVABI-XEN-SETUP-FAILED $nonce //p" "$work/clean.log" | tail -n1)"
    echo "run-in-dom0: dom0 did not run the program (${why:-no result marker}; qemu exit $qrc after ${secs}s); console tail:" >&2
    tail -n 40 "$work/clean.log" >&2
    exit 125
fi
sed -n "/PVABI-XEN-BEGIN $nonce/,/PVABI-XEN-RESULT $nonce/p" "$work/clean.log" \
    | sed '1d;$d' | grep -v '^(XEN) ' || true
echo "run-in-dom0: rc=$result after ${secs}s (accel $accel, qemu exit $qrc)" >&2
exit "$result"
