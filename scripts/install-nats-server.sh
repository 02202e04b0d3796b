#!/usr/bin/env bash
# Installs nats-server >= 2.10 when it is missing or too old.
# Debian 12 ships 2.9.10, which lacks `sync_interval` and several JetStream
# data-loss fixes, so we pin apt to take only the nats-server package from
# Debian trixie, where it is 2.10.x and installs cleanly on bookworm.
set -euo pipefail

have_good_version() {
  command -v nats-server >/dev/null 2>&1 || return 1
  local v
  v=$(nats-server --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)
  [ -n "$v" ] || return 1
  local major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

if have_good_version; then
  echo "nats-server $(nats-server --version) is present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ! -f /etc/apt/sources.list.d/dlm-trixie.sources ]; then
  $SUDO tee /etc/apt/sources.list.d/dlm-trixie.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # Everything from trixie is pinned below any installable priority, except
  # nats-server itself, so nothing else on the machine is upgraded.
  $SUDO tee /etc/apt/preferences.d/dlm-trixie >/dev/null <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: -10

Package: nats-server
Pin: release n=trixie
Pin-Priority: 990
PIN
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq nats-server
# The Debian package enables a system service; dlm starts its own servers.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now nats-server >/dev/null 2>&1 || true
fi
have_good_version || { echo "nats-server >= 2.10 could not be installed" >&2; exit 1; }
echo "installed $(nats-server --version)"
