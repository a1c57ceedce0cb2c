#!/usr/bin/env bash
# Installs the host tools the harness needs (Debian 12 or newer). Idempotent: packages
# already present are not touched, and apt's lists are refreshed only when needed.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils      # the VMs
  mmdebstrap                      # reference images from Debian packages
  e2fsprogs                       # mkfs.ext4 -d: directory to image without mounting
  squashfs-tools erofs-utils      # extension images
  fdisk cryptsetup-bin openssl    # sfdisk, veritysetup, openssl: the DDI tests check images
  ignition                        # ignition-validate: checks rendered configs in the tests
  gpg gpg-agent                   # per-run key that signs sysupdate channels (SHA256SUMS.gpg)
  python3 python3-venv python3-pip
  ca-certificates
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
