#!/bin/sh
# Runs `pvabi bench` with its QEMU peer: installs QEMU when missing, then measures.
# Arguments go to `pvabi bench` (e.g. --pv, --quick, --json FILE).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
"$here/install.sh"
cd "$here/../.."
cargo build --release -q -p pvabi-cli
exec ./target/release/pvabi bench "$@"
