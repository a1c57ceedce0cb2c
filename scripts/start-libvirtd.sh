#!/usr/bin/env bash
# Starts a libvirt daemon for the harness's libvirt backend (docs/libvirt.md) on a host
# without systemd as PID 1 (Debian 12 containers and CI). Idempotent: installs only what
# is missing, edits qemu.conf only if it differs, starts libvirtd only if it is not running,
# and waits until `virsh -c qemu:///system version` answers.
#
# libvirt-daemon-system is avoided on purpose: its postinst needs systemd as PID 1. What it
# would have created (the libvirt-qemu user, the kvm and libvirt groups, /run/libvirt) is
# made here instead. QEMU processes run as root with no security driver and no dynamic
# ownership, so they read the harness's disks, kernels and saved states where they are.
set -euo pipefail

URI="${LIBVIRT_URI:-qemu:///system}"
WAIT_SECONDS="${LIBVIRTD_WAIT_SECONDS:-60}"
PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients  # libvirtd, the QEMU driver, virsh
  libvirt-dev pkg-config      # to build the libvirt-python binding from PyPI
)
QEMU_CONF=/etc/libvirt/qemu.conf
# key = value lines qemu.conf must have (the harness's files are root's; no relabelling).
QEMU_SETTINGS=(
  'user = "root"'
  'group = "root"'
  'dynamic_ownership = 0'
  'security_driver = "none"'
  'stdio_handler = "file"'    # no virtlogd needed: QEMU's log goes straight to its file
)

say() { echo "start-libvirtd: $*"; }
die() { echo "start-libvirtd: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts libvirtd)"

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "could not install ${missing[*]} (apt-get install failed)"
}

create_accounts() {
  getent group kvm >/dev/null || { groupadd --system kvm; say "created group kvm"; }
  getent group libvirt >/dev/null || { groupadd --system libvirt; say "created group libvirt"; }
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  if ! getent passwd libvirt-qemu >/dev/null; then
    useradd --system --gid libvirt-qemu --groups kvm --home-dir /var/lib/libvirt \
      --no-create-home --shell /usr/sbin/nologin libvirt-qemu
    say "created user libvirt-qemu"
  fi
  mkdir -p /run/libvirt /run/libvirt/qemu /var/lib/libvirt/qemu /var/log/libvirt/qemu \
    /var/cache/libvirt/qemu
}

# Sets `key = value` in qemu.conf: replaces an active or commented-out line, else appends.
set_conf() {
  local line="$1" key
  key="${line%% =*}"
  if grep -qxF "$line" "$QEMU_CONF"; then
    return 1  # already so
  fi
  if grep -qE "^#?[[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF"; then
    sed -i -E "0,/^#?[[:space:]]*${key}[[:space:]]*=.*/s||${line//&/\\&}|" "$QEMU_CONF"
  else
    echo "$line" >>"$QEMU_CONF"
  fi
  # a second active line of the same key would win; drop the others
  awk -v k="$key" -v l="$line" '
    $0 == l { if (seen++) next; print; next }
    $0 ~ "^[[:space:]]*" k "[[:space:]]*=" { next }
    { print }' "$QEMU_CONF" >"$QEMU_CONF.tmp" && mv "$QEMU_CONF.tmp" "$QEMU_CONF"
  return 0
}

configure_qemu() {
  if [ ! -f "$QEMU_CONF" ]; then
    # Debian ships qemu.conf in libvirt-daemon-system, which is not installed: the daemon
    # uses built-in defaults for everything this file does not set.
    mkdir -p "$(dirname "$QEMU_CONF")"
    echo "# written by sysext-harness scripts/start-libvirtd.sh" >"$QEMU_CONF"
  fi
  local changed=false line
  for line in "${QEMU_SETTINGS[@]}"; do
    if set_conf "$line"; then
      changed=true
    fi
  done
  if [ "$changed" = true ]; then
    say "configured $QEMU_CONF (QEMU runs as root, no security driver, no dynamic ownership)"
  fi
  [ "$changed" = true ]
}

daemon_pid() {
  pgrep -x libvirtd 2>/dev/null | head -n1 || true
}

answers() {
  virsh -c "$URI" version >/dev/null 2>&1
}

start_daemon() {
  local restart="$1" pid
  pid=$(daemon_pid)
  if [ -n "$pid" ] && [ "$restart" = true ]; then
    say "restarting libvirtd (pid $pid) to apply the new qemu.conf"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    pid=""
  fi
  if [ -z "$pid" ]; then
    rm -f /run/libvirtd.pid
    say "starting libvirtd -d"
    libvirtd -d || die "libvirtd -d failed (see /var/log/libvirt/ and syslog)"
  fi
}

wait_until_answering() {
  local waited=0 err
  until answers; do
    if [ "$waited" -ge "$WAIT_SECONDS" ]; then
      err=$(virsh -c "$URI" version 2>&1 >/dev/null | tail -n2)
      die "libvirtd started but $URI did not answer in ${WAIT_SECONDS}s: $err"
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

install_packages
create_accounts
restart=false
if configure_qemu; then restart=true; fi
start_daemon "$restart"
wait_until_answering
say "$URI answers ($(virsh -c "$URI" version 2>/dev/null | grep -i 'running hypervisor' | sed 's/.*: *//'))"
