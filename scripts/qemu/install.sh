#!/bin/sh
# Installs Debian's qemu-system-x86 (the peer `pvabi bench` compares against) when it is
# missing. Safe to run again: it does nothing when qemu-system-x86_64 already runs.
#
# Debian 12's qemu-system-x86 (7.2) needs qemu-utils of the same version; a backported
# qemu-utils (e.g. 10.0) blocks it, so qemu-utils is pinned to the candidate of
# qemu-system-x86, downgrading it if need be. apt may be locked by another install: this
# waits for the lock (up to 10 minutes) and retries.
set -eu

if command -v qemu-system-x86_64 >/dev/null 2>&1 && qemu-system-x86_64 --version >/dev/null 2>&1; then
    echo "qemu: $(qemu-system-x86_64 --version | head -n 1) is installed"
    exit 0
fi

SUDO=
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi

apt_retry() {
    tries=0
    until $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 3 ]; then
            echo "qemu: apt-get $* failed $tries times" >&2
            return 1
        fi
        echo "qemu: apt-get $* failed; retrying in 20 s" >&2
        sleep 20
    done
}

apt_retry update
version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    echo "qemu: no qemu-system-x86 package is available from apt" >&2
    exit 1
fi
apt_retry install -y --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$version" "qemu-utils=$version"
echo "qemu: $(qemu-system-x86_64 --version | head -n 1) installed"
if [ -w /dev/kvm ] || [ -r /dev/kvm ]; then
    echo "qemu: /dev/kvm is present; pvabi bench tries -accel kvm first"
else
    echo "qemu: /dev/kvm is missing: QEMU will run with TCG only" >&2
fi
