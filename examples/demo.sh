#!/usr/bin/env bash
# make demo: run oci-systemd on the embedded example bundle. The bundle is copied to a
# temporary directory first, so the repository is never modified.
set -euo pipefail
BIN=${1:-.venv/bin}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$here/demo-bundle" "$work/bundle"
B="$work/bundle"
run() { printf '\n$ %s\n' "$*"; "$@"; }

echo "oci-systemd demo: a runc bundle whose process is /sbin/init -> /lib/systemd/systemd"
run "$BIN/oci-systemd" --version
# --cgroup v1 and an explicit --container-id make the output the same on every host.
opts=(--cgroup v1 --container-id demo)
run "$BIN/oci-systemd" review "$B" "${opts[@]}"
set +e
run "$BIN/oci-systemd" apply --check "$B" "${opts[@]}"; echo "(exit $? : changes pending)"
set -e
run "$BIN/oci-systemd" apply "$B" "${opts[@]}"
run cat "$B/oci-systemd/machine-id"
set +e
run "$BIN/oci-systemd" apply --check "$B" "${opts[@]}"; echo "(exit $? : nothing left to do)"
set -e
if "$BIN/oci-systemd" validate "$B" >/dev/null 2>&1; then
  run "$BIN/oci-systemd" validate "$B"
else
  run "$BIN/oci-systemd" validate "$B" || echo "(validate needs Debian's golang-github-opencontainers-specs-dev; 'bash .ci/run' installs it)"
fi
echo
echo "The image's own /etc/machine-id is untouched: $(cat "$B/rootfs/etc/machine-id")"
echo "A real bundle (a debootstrapped rootfs) then starts with: runc run -d --bundle BUNDLE ID; stop it with: runc kill ID 37"
