"""What goes into the virtualenv: a patch-range FastAPI pin deploys (the lock's patch, from the
virtualenv that lock already has); pip refuses a package that is not the one the lock file's hashes name, from the
index (a tampered lock file) or from a wheelhouse (a tampered wheel); a lock that lacks a
package its packages need is refused by name (nothing is resolved against the index to fill
the gap). The release that needed it is never served and the current one serves on. The
converged state comes back when the module ends."""

import re
import shutil
import subprocess

import pytest

from deploytest import REPO_ROOT, ROOT, SANDBOX_VARS, current_release, http_json, main_pid, run_playbook

pytestmark = pytest.mark.usefixtures("restore")
# Its first deploy gives the scenario's settings with a FastAPI range: any serving state will do.
STARTS_FROM_ANY_SERVING_STATE = True
LOCK = REPO_ROOT / "examples/hello_api/requirements.lock"
PIN = SANDBOX_VARS["fastapi_app_fastapi_version"]


def _edit_package(text, package, edit):
    """The lock file with each line of `package`'s entry (its pin, hashes and comments) replaced
    by edit(line), a line or None to drop it."""
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if re.match(r"^[A-Za-z0-9_.\-\[\]]+==", line):
            inside = line.lower().startswith(f"{package}==")
        line = edit(line) if inside else line
        if line is not None:
            out.append(line)
    assert out != lines, f"{package} is not in the lock file"
    return "\n".join(out) + "\n"


def _tamper_hashes(text, package):
    """The lock file with every hash of `package` replaced by another."""
    return _edit_package(text, package, lambda line: re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, line))


def _without(text, package):
    """The lock file without `package`."""
    return _edit_package(text, package, lambda line: None)


def _untouched(host, before):
    assert current_release(host) == before["release"]
    assert main_pid(host, "hello-api") == before["pid"], "the app was not restarted"
    assert http_json(host, "/")["app"] == "hello_api"


@pytest.fixture()
def before(host):
    return {"release": current_release(host), "pid": main_pid(host, "hello-api")}


def test_patch_range_pin_is_deployed(host):
    """A patch range instead of the exact pin, with the same lock: the lock's FastAPI (in the
    range) serves, from the virtualenv that lock was built for: pip installs what the lock
    lists, so the pin's spelling builds nothing new."""
    venvs = host.check_output(f"ls -1 {ROOT}/venvs").split()
    spec = f">={PIN},<0.{int(PIN.split('.')[1]) + 1}.0"
    result = run_playbook("-e", f"fastapi_app_fastapi_version={spec}")
    assert result.returncode == 0, result.stdout[-4000:]
    release = current_release(host)
    venv = host.check_output(f"readlink -f {ROOT}/releases/{release}/venv")
    assert venv.rsplit("/", 1)[-1] in venvs, f"{venv} was built by this run: the lock did not change"
    assert host.check_output(f"{venv}/bin/python -c 'import fastapi; print(fastapi.__version__)'") == PIN
    assert f"FastAPI {PIN}," in result.flat
    assert http_json(host, "/")["fastapi"] == PIN


def test_tampered_lock_file_is_refused(host, before, tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(_tamper_hashes(LOCK.read_text(), "idna"))
    result = run_playbook("-e", f"fastapi_app_requirements_lock={lock}")
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.flat, result.stdout[-4000:]
    assert "idna" in result.flat
    assert "The deploy stopped while preparing" in result.flat, result.stdout[-4000:]
    assert "tasks/switch.yml for" not in result.flat, "nothing was switched (the rollout's batches did not start)"
    _untouched(host, before)


def test_tampered_wheel_in_the_wheelhouse_is_refused(host, before, tmp_path):
    wheels = tmp_path / "wheels"
    made = subprocess.run([str(REPO_ROOT / "scripts/wheelhouse.sh"), str(LOCK), str(wheels), "3.11"],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    idna = next(wheels.glob("idna-*.whl"))
    with idna.open("ab") as f:  # one more byte: still a file of that name, no longer the locked one
        f.write(b"\0")
    # a lock file with the same pins but another virtualenv key, so that the venv is built anew
    lock = tmp_path / "requirements.lock"
    shutil.copy(LOCK, lock)
    with lock.open("a") as f:
        f.write("# the same pins, installed from a wheelhouse\n")
    result = run_playbook("-e", f"fastapi_app_requirements_lock={lock}", "-e", f"fastapi_app_wheelhouse={wheels}")
    assert result.returncode != 0
    assert "DO NOT MATCH THE HASHES" in result.flat, result.stdout[-4000:]
    assert "idna" in result.flat
    _untouched(host, before)


def test_incomplete_lock_file_is_refused_by_name(host, before, tmp_path):
    # idna is needed by anyio, email-validator and httpx, and named by nothing in requirements.in
    lock = tmp_path / "requirements.lock"
    lock.write_text(_without(LOCK.read_text(), "idna"))
    result = run_playbook("-e", f"fastapi_app_requirements_lock={lock}")
    assert result.returncode != 0
    assert f"The lock file {lock} is incomplete or inconsistent" in result.flat, result.stdout[-4000:]
    assert re.search(r"missing: idna \(needed by [^)]*anyio [0-9.]+", result.flat), result.stdout[-4000:]
    assert "scripts/lock.sh APP_DIR" in result.flat
    assert "The deploy stopped while preparing" in result.flat, result.stdout[-4000:]
    assert "tasks/switch.yml for" not in result.flat, "nothing was switched (the rollout's batches did not start)"
    # pip check found idna missing in the new virtualenv: nothing filled the gap from the index.
    # The run's pruning removed that virtualenv (no release uses it).
    assert host.run(f"grep -L '^idna==' {ROOT}/venvs/*/requirements.lock").stdout.split() == []
    _untouched(host, before)
