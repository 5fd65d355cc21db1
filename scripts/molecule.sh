#!/usr/bin/env bash
# Run Molecule with what it needs here: the project's virtualenv, the locally built Debian
# image (MOLECULE_IMAGE), and a podman runtime that works on this machine.
#   scripts/molecule.sh test                 # the default scenario
#   scripts/molecule.sh test -s cluster      # another scenario
#   scripts/molecule.sh converge / verify / login / destroy ...
source "$(dirname "$0")/lib.sh"
"${REPO_ROOT}/scripts/setup.sh"
image=$("${REPO_ROOT}/scripts/build-image.sh")
export MOLECULE_IMAGE="${MOLECULE_IMAGE:-${image}}"
podman_runtime_setup "${MOLECULE_IMAGE}"
export PATH="${REPO_ROOT}/.venv/bin:${PATH}"
cd "${REPO_ROOT}"
exec molecule "$@"
