#!/usr/bin/env bash
# Build the local Debian test image (systemd as init, python3, sshd, sudo) from Debian's own
# packages with debootstrap, and import it into podman. No registry is needed. The image is
# cached: it is rebuilt only when its recipe (RECIPE, the packages, DEBIAN_RELEASE) changes.
# Test hosts made from it (scripts/test-host.sh) are reached over SSH, as servers are: as
# the unprivileged user `deploy`, with a key and passwordless sudo; root cannot log in. The
# image has no SSH host key and no authorized key: each host gets its own when it is made.
# Prints the image name on stdout.
#   scripts/build-image.sh                 # Debian 12 (bookworm)
#   DEBIAN_RELEASE=trixie scripts/build-image.sh     # Debian 13
# Set FASTAPI_DEPLOY_IMAGE to use an image you already have instead (nothing is built).
source "$(dirname "$0")/lib.sh"

if [ -n "${FASTAPI_DEPLOY_IMAGE:-}" ]; then
  echo "${FASTAPI_DEPLOY_IMAGE}"
  exit 0
fi

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="systemd,systemd-sysv,python3,python3-apt,sudo,ca-certificates,iproute2,curl,openssh-server"
# Bump RECIPE when the way the image is made changes: the tag follows it and the packages.
RECIPE=2
recipe_hash=$(echo "${RECIPE} ${DEBIAN_RELEASE} ${PACKAGES} ${MIRROR}" | sha256sum | cut -c1-12)
image="localhost/fastapi-deploy-debian:${DEBIAN_RELEASE}-${recipe_hash}"

alias="localhost/fastapi-deploy-debian:${DEBIAN_RELEASE}"
if podman image exists "${image}"; then
  podman tag "${image}" "${alias}"
  echo "${image}"
  exit 0
fi

command -v debootstrap >/dev/null || die "debootstrap is not installed: run 'make setup' first"
rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/fastapi-rootfs.XXXXXX")
trap 'rm -rf "${rootfs}"' EXIT
log "building ${image} with debootstrap (about a minute)"
debootstrap --variant=minbase --include="${PACKAGES}" "${DEBIAN_RELEASE}" "${rootfs}" "${MIRROR}" \
  > "${CACHE_DIR}/debootstrap-${DEBIAN_RELEASE}.log" 2>&1 \
  || die "debootstrap failed; see ${CACHE_DIR}/debootstrap-${DEBIAN_RELEASE}.log"
# A container needs no getty, and its machine-id is made at first boot.
rm -f "${rootfs}/etc/machine-id" && touch "${rootfs}/etc/machine-id"
chroot "${rootfs}" systemctl mask getty@tty1.service serial-getty@.service \
  systemd-udevd.service systemd-udev-trigger.service >/dev/null 2>&1 || true
# The login the deploy uses: an unprivileged user with passwordless sudo, like a cloud image's.
chroot "${rootfs}" useradd --create-home --shell /bin/bash deploy
install -d -m 0700 "${rootfs}/home/deploy/.ssh"
chroot "${rootfs}" chown deploy:deploy /home/deploy/.ssh
echo 'deploy ALL=(ALL) NOPASSWD:ALL' > "${rootfs}/etc/sudoers.d/deploy"
chmod 0440 "${rootfs}/etc/sudoers.d/deploy"
cat > "${rootfs}/etc/ssh/sshd_config.d/fastapi-test-host.conf" <<'SSHD'
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
SSHD
# Host keys are made per host by scripts/test-host.sh (a shared key would let one host
# pass for another).
rm -f "${rootfs}"/etc/ssh/ssh_host_*
chroot "${rootfs}" systemctl enable ssh.service >/dev/null 2>&1 || true
chroot "${rootfs}" apt-get clean
tar -C "${rootfs}" -c . | podman import --change 'CMD ["/sbin/init"]' - "${image}" >/dev/null
podman tag "${image}" "${alias}"
log "built ${image} (also tagged ${alias})"
echo "${image}"
