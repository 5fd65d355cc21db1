#!/usr/bin/env bash
# Run Molecule with what it needs here: the project's virtualenv, the locally built Debian
# images, and a podman runtime that works on this machine.
#   scripts/molecule.sh test                          # the default scenario (Debian 12)
#   DEBIAN_RELEASE=trixie scripts/molecule.sh test    # the default scenario on Debian 13
#   scripts/molecule.sh test -s cluster               # another scenario
#   scripts/molecule.sh converge / verify / login / destroy ...
# Each scenario keeps its files (inventory, keys, known_hosts) in .cache/molecule/<scenario>,
# where the tests find them too: after `scripts/molecule.sh converge [-s NAME]`, any test
# file runs by itself with plain pytest, e.g. `.venv/bin/pytest molecule/default/tests/test_proxy.py`.
# MOLECULE_IMAGE is the default scenario's image (DEBIAN_RELEASE, Debian 12 unless set);
# MOLECULE_IMAGE_BOOKWORM and MOLECULE_IMAGE_TRIXIE are the cluster's mixed fleet.
source "$(dirname "$0")/lib.sh"
if [[ " $* " == *" vm "* || " $* " == *"-s vm"* ]]; then
  "${REPO_ROOT}/scripts/setup.sh" vm
else
  "${REPO_ROOT}/scripts/setup.sh"
fi
image=$("${REPO_ROOT}/scripts/build-image.sh")
export MOLECULE_IMAGE="${MOLECULE_IMAGE:-${image}}"
if [[ " $* " == *" cluster "* || " $* " == *"-s cluster"* ]]; then
  MOLECULE_IMAGE_BOOKWORM="${MOLECULE_IMAGE_BOOKWORM:-$(DEBIAN_RELEASE=bookworm "${REPO_ROOT}/scripts/build-image.sh")}"
  MOLECULE_IMAGE_TRIXIE="${MOLECULE_IMAGE_TRIXIE:-$(DEBIAN_RELEASE=trixie "${REPO_ROOT}/scripts/build-image.sh")}"
  export MOLECULE_IMAGE_BOOKWORM MOLECULE_IMAGE_TRIXIE
fi
podman_runtime_setup "${MOLECULE_IMAGE}"
scenario=default
args=("$@")
for i in "${!args[@]}"; do
  case "${args[$i]}" in
    -s|--scenario-name) scenario="${args[$((i + 1))]:-default}" ;;
    --scenario-name=*) scenario="${args[$i]#*=}" ;;
  esac
done
export MOLECULE_EPHEMERAL_DIRECTORY="${MOLECULE_EPHEMERAL_DIRECTORY:-${CACHE_DIR}/molecule/${scenario}}"
export PATH="${REPO_ROOT}/.venv/bin:${PATH}"
cd "${REPO_ROOT}"
exec molecule "$@"
