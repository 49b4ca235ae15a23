#!/bin/sh
# /init of the dom0 initramfs that scripts/xen/setup.sh builds: loads the Xen device modules,
# mounts xenfs, starts the real xenstored, runs /payload/run with the arguments from
# /payload/env (appended by scripts/xen/run-in-dom0.sh), prints its output between marker lines
# on the console, and powers the machine off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mkdir -p /run/xenstored /var/lib/xenstored /var/log/xen /tmp
PVABI_NONCE=none
[ -f /payload/env ] && . /payload/env

fail() {
    echo "PVABI-XEN-SETUP-FAILED $PVABI_NONCE $*"
    poweroff -f
    sleep 5
    echo o >/proc/sysrq-trigger
}

for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do
    insmod "/modules/$m.ko" || fail "insmod $m"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || fail "mount xenfs"
[ -x /payload/run ] || fail "no /payload/run"

# Arguments come one per line, so that they may contain spaces.
set --
if [ -f /payload/xenstored-args ]; then
    while IFS= read -r a; do set -- "$@" "$a"; done </payload/xenstored-args
fi
/usr/sbin/xenstored -N "$@" >/var/log/xen/xenstored.out 2>&1 &
i=0
while [ ! -S /run/xenstored/socket ]; do
    i=$((i + 1))
    if [ "$i" -gt 200 ]; then
        cat /var/log/xen/xenstored.out
        fail "xenstored did not create /run/xenstored/socket"
    fi
    sleep 0.05
done

# The toolstack parts for domUs (pvabi-domu-run): dom0's own nodes and the console daemon.
mkdir -p /run/xen /var/log/xen
if ! xen-init-dom0 >/var/log/xen/xen-init-dom0.out 2>&1; then
    echo "dom0-init: xen-init-dom0 failed (domUs will not start):"
    cat /var/log/xen/xen-init-dom0.out
fi
mkdir -p /var/log/xen/console
xenconsoled --log=guest --log-dir=/var/log/xen/console ||
    echo "dom0-init: xenconsoled failed (domUs will not start)"

set --
if [ -f /payload/args ]; then
    while IFS= read -r a; do set -- "$@" "$a"; done </payload/args
fi
echo "PVABI-XEN-BEGIN $PVABI_NONCE"
(cd /payload && ./run "$@") 2>&1
rc=$?
echo "PVABI-XEN-RESULT $PVABI_NONCE rc=$rc"
poweroff -f
sleep 5
echo o >/proc/sysrq-trigger
