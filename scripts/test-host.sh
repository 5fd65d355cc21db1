#!/usr/bin/env bash
# Make and remove disposable test hosts: podman containers running systemd and sshd (from the
# image scripts/build-image.sh makes), reached over SSH the way servers are: as the
# unprivileged user `deploy`, with a key and passwordless sudo, the host key checked.
#
#   scripts/test-host.sh create DIR NAME IMAGE [podman create options...]   # prints the address
#   scripts/test-host.sh destroy DIR NAME...
#   scripts/test-host.sh ssh DIR NAME [command...]                          # log in, or run one command
#   scripts/test-host.sh inventory DIR NAME...                              # an Ansible inventory of them
#
# DIR keeps what the controller needs: the login key (DIR/id_ed25519, made once) and
# DIR/known_hosts, where each host's own key is written when the host is made (a new key
# per host, made here, copied in before its first boot; never "accept whatever answers").
# The controller reaches a host at its address on its podman network.
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,15p' "$0" >&2; exit 2; }
[ "$#" -ge 2 ] || usage
action=$1 dir=$2
shift 2
mkdir -p "${dir}" && chmod 0700 "${dir}"
key="${dir}/id_ed25519"
known="${dir}/known_hosts"

ssh_args() {
  printf '%s ' -o "UserKnownHostsFile=${known}" -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes \
    -o BatchMode=yes -o ConnectTimeout=10
}


address() {
  podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$1" 2>/dev/null | awk '{print $1}'
}

case "${action}" in
  create)
    [ "$#" -ge 2 ] || usage
    name=$1 image=$2
    shift 2
    podman_runtime_setup "${image}"
    [ -f "${key}" ] || ssh-keygen -q -t ed25519 -N '' -C "fastapi-deploy-tests" -f "${key}"
    hostkeys="${dir}/hostkeys/${name}"
    rm -rf "${hostkeys}" && mkdir -p "${hostkeys}"
    ssh-keygen -q -t ed25519 -N '' -C "root@${name}" -f "${hostkeys}/ssh_host_ed25519_key"
    podman rm -f -t 0 "${name}" >/dev/null 2>&1 || true
    podman create --name "${name}" --hostname "${name}" --systemd=always "$@" "${image}" /sbin/init >/dev/null
    podman cp "${hostkeys}/ssh_host_ed25519_key" "${name}:/etc/ssh/ssh_host_ed25519_key"
    podman cp "${hostkeys}/ssh_host_ed25519_key.pub" "${name}:/etc/ssh/ssh_host_ed25519_key.pub"
    podman cp "${key}.pub" "${name}:/home/deploy/.ssh/authorized_keys"
    podman start "${name}" >/dev/null
    addr=$(address "${name}")
    [ -n "${addr}" ] || die "${name} has no address on its network"
    (
      flock 9
      [ ! -f "${known}" ] || ssh-keygen -q -R "${addr}" -f "${known}" >/dev/null 2>&1 || true
      echo "${addr} $(cut -d' ' -f1,2 "${hostkeys}/ssh_host_ed25519_key.pub")" >> "${known}"
      rm -f "${known}.old"
    ) 9>"${dir}/.known_hosts.lock"
    # shellcheck disable=SC2046
    for _ in $(seq 1 120); do
      if ssh $(ssh_args) -o ConnectTimeout=2 -i "${key}" "deploy@${addr}" true 2>/dev/null; then
        echo "${addr}"
        exit 0
      fi
      sleep 0.5
    done
    ssh $(ssh_args) -i "${key}" "deploy@${addr}" true || true
    die "${name} (${addr}) did not let deploy log in over SSH within 60 s"
    ;;
  destroy)
    for name in "$@"; do
      addr=$(address "${name}" || true)
      podman rm -f -t 0 "${name}" >/dev/null 2>&1 || true
      if [ -n "${addr}" ] && [ -f "${known}" ]; then
        ( flock 9; ssh-keygen -q -R "${addr}" -f "${known}" >/dev/null 2>&1 || true; rm -f "${known}.old" ) 9>"${dir}/.known_hosts.lock"
      fi
      rm -rf "${dir}/hostkeys/${name}"
    done
    ;;
  ssh)
    [ "$#" -ge 1 ] || usage
    name=$1
    shift
    addr=$(address "${name}")
    [ -n "${addr}" ] || die "no test host ${name}"
    # shellcheck disable=SC2046
    exec ssh $(ssh_args) -i "${key}" "deploy@${addr}" "$@"
    ;;
  inventory)
    # The connection of each host, as an inventory to give ansible-playbook beside another
    # (-i inventory/sandbox/hosts.yml -i DIR/hosts.yml): the settings users give for servers.
    echo "# Written by scripts/test-host.sh: how to reach the test hosts over SSH."
    echo "all:"
    echo "  hosts:"
    for name in "$@"; do
      addr=$(address "${name}")
      [ -n "${addr}" ] || die "no test host ${name}"
      printf '    %s:\n      ansible_host: %s\n      ansible_user: deploy\n' "${name}" "${addr}"
      printf '      ansible_ssh_private_key_file: %s\n' "${key}"
      printf '      ansible_ssh_common_args: -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes\n' "${known}"
    done
    ;;
  *) usage ;;
esac
