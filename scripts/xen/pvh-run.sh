#!/bin/sh
# pvabi-pvh-run: runs in dom0 (installed by scripts/xen/setup.sh as /usr/sbin/pvabi-pvh-run).
# Boots a bare-metal PVH kernel image (an ELF with a XEN_ELFNOTE_PHYS32_ENTRY note) as an
# unprivileged domU with `xl create`, waits until the domain is gone or the time limit, and prints
# its console on stdout. Exit status 0 when the domain ran and went away, 124 on the time limit,
# 125 when `xl create` failed.
#
# Usage: pvabi-pvh-run [--memory MB] [--timeout SECONDS] [--name NAME] [--paused] IMAGE [CMDLINE]
#
#   --paused  create the domain paused and print `PVH-RUN-CREATED <domid>` on stdout (flushed
#             before anything else), so that a caller can prepare xenstore for the domain and
#             then start it with `xl unpause <domid>`; the time limit runs from creation.
set -u
mem=16
limit=120
name=pvabi-pvh
paused=0
usage="usage: pvabi-pvh-run [--memory MB] [--timeout SECONDS] [--name NAME] [--paused] IMAGE [CMDLINE]"
while :; do
    case "${1:-}" in
        --memory) mem=$2; shift 2 ;;
        --timeout) limit=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --paused) paused=1; shift ;;
        *) break ;;
    esac
done
img=${1:?$usage}
cmdline=${2:-}
w=$(mktemp -d /tmp/pvh.XXXXXX)
cat >"$w/domu.cfg" <<CFG
name = "$name"
type = "pvh"
kernel = "$img"
cmdline = "$cmdline"
memory = $mem
vcpus = 1
on_poweroff = "destroy"
on_reboot = "destroy"
on_crash = "destroy"
CFG
log=/var/log/xen/console/guest-$name.log
rm -f "$log"
start=$(date +%s)
create_args=""
[ "$paused" = 1 ] && create_args="-p"
if ! xl create $create_args "$w/domu.cfg" >"$w/xl.out" 2>&1; then
    echo "pvabi-pvh-run: xl create failed:" >&2
    cat "$w/xl.out" >&2
    rm -rf "$w"
    exit 125
fi
if [ "$paused" = 1 ]; then
    echo "PVH-RUN-CREATED $(xl domid "$name")"
fi
rc=0
while xl domid "$name" >/dev/null 2>&1; do
    if [ $(($(date +%s) - start)) -gt "$limit" ]; then
        echo "pvabi-pvh-run: the domain did not finish within ${limit}s" >&2
        xl destroy "$name" >/dev/null 2>&1
        rc=124
        break
    fi
    sleep 0.2
done
tr -d '\r' <"$log" 2>/dev/null
rm -rf "$w"
exit "$rc"
