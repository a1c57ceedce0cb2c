#!/usr/bin/env bash
# Installs the host tools the harness needs (Debian 12 or newer; on Debian 12, QEMU comes
# from bookworm-backports). Idempotent: packages already present are not touched, and
# apt's lists are refreshed only when needed.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils      # the VMs
  mmdebstrap                      # reference images from Debian packages
  e2fsprogs                       # mkfs.ext4 -d: directory to image without mounting
  busybox-static                  # the reference images' minimal initramfs
  squashfs-tools erofs-utils      # extension images
  fdisk cryptsetup-bin openssl    # sfdisk, veritysetup, openssl: the DDI tests check images
  ignition                        # ignition-validate: checks rendered configs in the tests
  gpg gpg-agent                   # per-run key that signs sysupdate channels (SHA256SUMS.gpg)
  # `images export` (exported reference disks, docs/real-images.md): the ESP with
  # systemd-boot made without mounting (mkfs.fat -C, mtools), GRUB i386-pc for BIOS
  # exports, and OVMF, the UEFI firmware that boots them and distributions' UEFI images.
  ovmf systemd-boot-efi mtools dosfstools grub-pc-bin
  python3 python3-venv python3-pip
  libvirt-dev pkg-config gcc python3-dev  # to build the libvirt-python binding (pyproject)
  ca-certificates
  chromium                        # headless: tests/integration/test_matrix_html.py (matrix.html)
  apparmor                        # apparmor_parser: tests/integration/test_lsm_denial.py
)

# QEMU 8 and later translate guest code position-independently, so the translation of a
# shared library is reused by every guest process that maps it: under TCG that halves boot
# and command times against Debian 12's QEMU 7.2. Debian 12 gets QEMU from its backports.
QEMU_MIN_VERSION="1:8.0"
QEMU_PACKAGES=(qemu-system-x86 qemu-utils)

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

qemu_too_old() {
  local version
  installed qemu-system-x86 || return 0
  version=$(dpkg-query -W -f='${Version}' qemu-system-x86)
  ! dpkg --compare-versions "$version" ge "$QEMU_MIN_VERSION"
}

upgrade_qemu=false
if qemu_too_old; then
  upgrade_qemu=true  # installs QEMU_PACKAGES below, from backports where needed
fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  if [ "$upgrade_qemu" = true ] && [[ " ${QEMU_PACKAGES[*]} " == *" $pkg "* ]]; then
    continue
  fi
  installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ] && [ "$upgrade_qemu" = false ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]} ${QEMU_PACKAGES[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
qemu_release=()
if [ "$upgrade_qemu" = true ]; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$codename" = bookworm ]; then
    list=/etc/apt/sources.list.d/sysext-harness-bookworm-backports.list
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # The mirror the host already uses (see harness/targets/build.py: debian_mirror).
      mirror=$( (grep -rhoE "https?://[^ ]*/debian/?( |$)" /etc/apt/sources.list \
                   /etc/apt/sources.list.d/ 2>/dev/null || true) | head -n1 | tr -d ' ')
      echo "deb ${mirror:-http://deb.debian.org/debian} bookworm-backports main" | $SUDO tee "$list" >/dev/null
      echo "setup: added bookworm-backports ($list) for QEMU >= ${QEMU_MIN_VERSION#1:}"
    fi
    qemu_release=(-t bookworm-backports)
  fi
fi
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$upgrade_qemu" = true ]; then
  echo "setup: installing QEMU >= ${QEMU_MIN_VERSION#1:} ${qemu_release[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${qemu_release[@]}" "${QEMU_PACKAGES[@]}" >/dev/null
  if qemu_too_old; then
    echo "setup: warning: QEMU is still older than ${QEMU_MIN_VERSION#1:}; everything works, at about half the speed" >&2
  fi
fi
