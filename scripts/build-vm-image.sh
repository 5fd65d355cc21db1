#!/usr/bin/env bash
# Build the local Debian virtual machine image for the Molecule `vm` scenario, from Debian's
# own packages: debootstrap (systemd, the cloud kernel, openssh-server, sudo, python3), an
# unprivileged `deploy` user with passwordless sudo and the scenario's SSH key, DHCP on the
# virtual network. The VM boots its kernel directly (QEMU -kernel/-initrd), so there is no
# boot loader. Cached: rebuilt only when the recipe (this file, the release, the key) changes.
# Prints the directory holding disk.qcow2, vmlinuz, initrd.img, id_ed25519 and known_hosts.
#   scripts/build-vm-image.sh                    # Debian 12
#   DEBIAN_RELEASE=trixie scripts/build-vm-image.sh
source "$(dirname "$0")/lib.sh"

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="systemd,systemd-sysv,udev,dbus,linux-image-cloud-amd64,openssh-server,sudo,python3,python3-apt,ca-certificates,iproute2,curl"
# The packages the roles install (fastapi_host, fastapi_proxy, fastapi_firewall), installed here
# at native speed: under software emulation dpkg takes minutes for them. The deploy still runs
# its apt tasks and finds them present; the container scenarios prove the install itself on
# hosts that lack them.
PACKAGES="${PACKAGES},python3-venv,python3-packaging,git,nginx,openssl,nftables"
RECIPE=1
SIZE="${VM_DISK_SIZE:-6G}"

for cmd in debootstrap qemu-img qemu-system-x86_64 mkfs.ext4 ssh-keygen; do
  command -v "${cmd}" >/dev/null || die "${cmd} is missing: run scripts/setup.sh vm"
done

keydir="${CACHE_DIR}/vm-key"
if [ ! -f "${keydir}/id_ed25519" ]; then
  mkdir -p "${keydir}" && chmod 700 "${keydir}"
  ssh-keygen -q -t ed25519 -N '' -C fastapi-deploy-vm -f "${keydir}/id_ed25519"
fi
pubkey=$(cat "${keydir}/id_ed25519.pub")
recipe_hash=$( (echo "${RECIPE} ${DEBIAN_RELEASE} ${PACKAGES} ${MIRROR} ${SIZE} ${pubkey}"; cat "$0") | sha256sum | cut -c1-12)
out="${CACHE_DIR}/vm-${DEBIAN_RELEASE}-${recipe_hash}"
if [ -f "${out}/disk.qcow2" ]; then
  echo "${out}"
  exit 0
fi

rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/fastapi-vm-rootfs.XXXXXX")
work="${out}.partial"
cleanup() {
  # debootstrap mounts /proc and /sys in the tree it builds: never remove through a mount.
  local mounts
  mounts=$(grep -o " ${rootfs}/[^ ]*" /proc/mounts | sort -r || true)
  for m in ${mounts}; do umount -l "${m}" || true; done
  if ! grep -q " ${rootfs}/" /proc/mounts; then rm -rf "${rootfs}"; fi
  rm -rf "${work}"
}
trap cleanup EXIT
rm -rf "${work}" && mkdir -p "${work}"
log "building the ${DEBIAN_RELEASE} VM image with debootstrap (a few minutes)"
debootstrap --variant=minbase --include="${PACKAGES}" "${DEBIAN_RELEASE}" "${rootfs}" "${MIRROR}" \
  > "${CACHE_DIR}/debootstrap-vm-${DEBIAN_RELEASE}.log" 2>&1 \
  || die "debootstrap failed; see ${CACHE_DIR}/debootstrap-vm-${DEBIAN_RELEASE}.log"

# The root file system, the network (DHCP from QEMU's user-mode network), the host name.
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "${rootfs}/etc/fstab"
echo fastapi-vm > "${rootfs}/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 fastapi-vm\n' > "${rootfs}/etc/hosts"
cat > "${rootfs}/etc/systemd/network/10-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
echo 'nameserver 10.0.2.3' > "${rootfs}/etc/resolv.conf"
chroot "${rootfs}" systemctl enable systemd-networkd.service >/dev/null 2>&1
chroot "${rootfs}" systemctl enable ssh.service >/dev/null 2>&1 || true
# A serial console for the boot log (QEMU writes it to console.log).
chroot "${rootfs}" systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true

# The unprivileged user the deploy logs in as, with the scenario's key and passwordless sudo.
chroot "${rootfs}" useradd --create-home --shell /bin/bash deploy
install -d -m 0700 "${rootfs}/home/deploy/.ssh"
install -m 0600 "${keydir}/id_ed25519.pub" "${rootfs}/home/deploy/.ssh/authorized_keys"
chroot "${rootfs}" chown -R deploy:deploy /home/deploy/.ssh
echo 'deploy ALL=(ALL) NOPASSWD:ALL' > "${rootfs}/etc/sudoers.d/deploy"
chmod 0440 "${rootfs}/etc/sudoers.d/deploy"
# SSH: keys only, never root.
cat > "${rootfs}/etc/ssh/sshd_config.d/fastapi-vm.conf" <<'SSHD'
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
SSHD
# Host keys made now, for this image: the scenario trusts exactly these (known_hosts), no
# "accept whatever answers". A clone of the image shares them; it is a throwaway test host.
rm -f "${rootfs}"/etc/ssh/ssh_host_*
for type in ed25519 ecdsa rsa; do
  ssh-keygen -q -t "${type}" -N '' -C "root@fastapi-vm" -f "${rootfs}/etc/ssh/ssh_host_${type}_key"
done
rm -f "${rootfs}/etc/machine-id" && touch "${rootfs}/etc/machine-id"
# Package lists as new as the image, like a cloud image updated at first boot: the roles' apt
# tasks find them fresh (less than an hour old) and every package present, so they fetch
# nothing (apt-get update under software emulation takes minutes). The container scenarios
# prove the install (their images lack these packages), and the fetch once their images' lists
# are more than an hour old.
chroot "${rootfs}" apt-get clean

cp "${rootfs}"/boot/vmlinuz-* "${work}/vmlinuz"
cp "${rootfs}"/boot/initrd.img-* "${work}/initrd.img"
cp "${keydir}/id_ed25519" "${work}/id_ed25519" && chmod 600 "${work}/id_ed25519"
awk '{print "@HOST@", $1, $2}' "${rootfs}"/etc/ssh/ssh_host_ed25519_key.pub > "${work}/known_hosts.template"
mkfs.ext4 -q -L root -d "${rootfs}" "${work}/disk.raw" "${SIZE}" >&2
qemu-img convert -O qcow2 "${work}/disk.raw" "${work}/disk.qcow2"
rm -f "${work}/disk.raw"
rm -rf "${out}" && mv "${work}" "${out}"
log "built ${out}"
echo "${out}"
