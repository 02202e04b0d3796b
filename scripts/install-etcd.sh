#!/usr/bin/env bash
# For `npm run bench:compare` only: puts an etcd server on PATH if there is
# none, from Debian's packages (etcd-server, 3.4 on Debian 12) when apt-get
# is usable. Never fails: without etcd the comparison runs without it and
# says so.
set -uo pipefail

say() { echo "install-etcd: $*" >&2; }

if command -v etcd >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "no etcd and no apt-get; the comparison will skip etcd (or pass --etcd PATH)"
  exit 0
fi
sudo_cmd=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo -n"; else
    say "no etcd, and installing it needs root; the comparison will skip etcd"
    exit 0
  fi
fi
say "installing etcd-server from Debian's packages"
if ! $sudo_cmd apt-get install -y --no-install-recommends etcd-server >&2; then
  $sudo_cmd apt-get update >&2 && $sudo_cmd apt-get install -y --no-install-recommends etcd-server >&2 \
    || say "could not install etcd-server; the comparison will skip etcd"
fi
# The Debian package may start a system etcd on 2379; the bench runs its own on free ports.
exit 0
