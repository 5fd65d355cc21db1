"""What the Molecule scenarios' testinfra tests share: the scenario's hosts and settings, the
deploy run as users run it (ansible-playbook over SSH, with Molecule's inventory), HTTP(S)
from the controller, a load generator that proves it spanned a deploy, and the checks of the
SSH transport. Imported normally (`from deploytest import ...`): pytest.ini puts this folder
on the path.

Commands on the hosts go over SSH too (`ssh_host`), as the unprivileged deploy user with sudo,
the host key checked, one shared connection per host: about 18 ms of CPU a command, against
145 ms through `podman exec` (which stays for what SSH cannot do: a host whose sshd is stopped,
the `console`).
"""

import configparser
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import testinfra
import yaml
from ansible.plugins.connection.ssh import Connection as SSHConnection

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_VARS = yaml.safe_load((REPO_ROOT / "inventory/sandbox/group_vars/fastapi_servers.yml").read_text())
PROXY_VARS = yaml.safe_load((REPO_ROOT / "inventory/sandbox/group_vars/fastapi_proxies.yml").read_text())
ROOT = "/srv/fastapi"
SCENARIO_DIR = EPHEMERAL = INVENTORY = None


def use_scenario(scenario_dir):
    """Called by each scenario's conftest. Molecule's verify says where the scenario's files
    are (MOLECULE_*); a plain pytest run after `scripts/molecule.sh converge` finds them in
    .cache/molecule/<scenario>, where scripts/molecule.sh keeps them."""
    global SCENARIO_DIR, EPHEMERAL, INVENTORY
    SCENARIO_DIR = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY") or scenario_dir)
    EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
                     or REPO_ROOT / ".cache/molecule" / SCENARIO_DIR.name)
    INVENTORY = EPHEMERAL / "inventory"
    assert (INVENTORY / "ansible_inventory.yml").exists(), \
        f"no hosts for the {SCENARIO_DIR.name} scenario: run scripts/molecule.sh converge -s {SCENARIO_DIR.name} first"
    return platforms()


def platforms():
    """The scenario's platforms (name, groups, ...), from its molecule.yml."""
    return yaml.safe_load((SCENARIO_DIR / "molecule.yml").read_text())["platforms"]


def inventory_host(name):
    """The connection variables Molecule wrote for a host (address, user, key, SSH options)."""
    data = yaml.safe_load((INVENTORY / "ansible_inventory.yml").read_text())
    return data["all"]["hosts"][name]


def control_path(name):
    """The socket of the tests' shared SSH connection to the host `name` (see ssh_host)."""
    return EPHEMERAL / f"testinfra-{name}"


def ssh_host(name, sudo=True, timeout=30):
    """testinfra's view of the test host `name` over SSH, as the deploy reaches it (Molecule's
    inventory: the unprivileged user, its key, the scenario's known_hosts, checked), commands
    run as root through sudo unless `sudo` is false, over one shared connection (ControlMaster;
    `timeout`: seconds to connect). `host.instance` is the host's name (its container's)."""
    hv = inventory_host(name)
    shared = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s", "-o", f"ControlPath={control_path(name)}",
              "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    host = testinfra.get_host(
        f"ssh://{hv['ansible_user']}@{hv['ansible_host']}:{hv.get('ansible_port', 22)}",
        ssh_identity_file=hv["ansible_private_key_file"],
        ssh_extra_args=" ".join(shlex.split(hv["ansible_ssh_common_args"]) + shared), sudo=sudo, timeout=timeout)
    host.instance = name
    return host


def console(name):
    """The host `name` through podman exec, as root: for what SSH cannot reach (the host's sshd
    stopped by a test, a boot in progress)."""
    host = testinfra.get_host(f"podman://{name}")
    host.instance = name
    return host


def end_ssh_master(path):
    """End the shared SSH connection (ControlMaster) whose socket is `path`, if there is one."""
    subprocess.run(["ssh", "-O", "exit", "-o", f"ControlPath={path}", "unused"], capture_output=True)


def end_shared_connection(name):
    """End the tests' shared SSH connection to `name` (its host was killed, or its sshd): the
    next command connects anew instead of waiting on a dead one."""
    end_ssh_master(control_path(name))


def ansible_env(**extra):
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO_ROOT / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    env.setdefault("ANSIBLE_CONFIG", str(EPHEMERAL / "ansible.cfg"))  # the settings Molecule used
    env.update(extra)
    return env


def run_playbook(*extra_args, limit=None, check=False, playbook="deploy.yml", timeout=1200, env=None, inventory=None):
    """Run playbooks/<playbook> as a user does, over SSH, with Molecule's inventory (all its
    hosts unless `limit`; another one: `inventory`). Returns the CompletedProcess, with
    `.started`, `.ended` (Unix time)."""
    args = ["ansible-playbook", "-i", str(inventory or INVENTORY), str(REPO_ROOT / "playbooks" / playbook), *extra_args]
    if limit:
        args += ["--limit", limit]
    if check:
        args += ["--check", "--diff"]
    started = time.time()
    result = subprocess.run(args, capture_output=True, text=True, env=env or ansible_env(), cwd=REPO_ROOT,
                            timeout=timeout)
    result.started, result.ended = started, time.time()
    result.flat = " ".join((result.stdout + result.stderr).split())  # the callback folds long lines
    record_run(playbook, args[4:], started, result.returncode, result.stdout)
    return result


def record_run(playbook, args, started, returncode, output=""):
    """One line of JSON per playbook run in .cache/playbook-runs-<scenario>.jsonl (the test, the
    playbook, its arguments, seconds, exit code, task results): where the suite's time goes
    (scripts/test.sh sums it up per test after each scenario's output)."""
    recap = [int(n) for n in re.findall(r"\b(?:ok|skipped)=(\d+)", output)]
    line = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0], "playbook": playbook,
            "args": [a for a in args if "=" not in a or len(a) < 80], "seconds": round(time.time() - started, 1),
            "rc": returncode, "task_results": sum(recap)}
    (REPO_ROOT / ".cache").mkdir(exist_ok=True)
    with open(REPO_ROOT / f".cache/playbook-runs-{SCENARIO_DIR.name}.jsonl", "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")


def release_lock(**kwargs):
    """lock.yml with fastapi_deploy_lock_action=release, as an operator gives back a lock that a
    killed run left: run_playbook's result."""
    return run_playbook("-e", "fastapi_deploy_lock_action=release", playbook="lock.yml", **kwargs)


def deploy_killed_when(host, condition, *args, timeout=600, poll=0.05):
    """Start deploy.yml as run_playbook does, and kill it (ansible-playbook and its SSH sessions:
    its whole process group, SIGKILL, as a lost controller would leave them) as soon as
    `condition` (a shell test run on `host`) holds: tested on the host every `poll` seconds, in
    a loop of a few seconds there (one command from here per loop, so that the run's next step
    does not slip in between). Returns how long the run had gone on."""
    output = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(
        ["ansible-playbook", "-i", str(INVENTORY), str(REPO_ROOT / "playbooks/deploy.yml"), *args],
        env=ansible_env(), cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                output.seek(0)
                raise AssertionError("the deploy ended before the moment to kill it:\n" + output.read()[-4000:])
            if host.run("timeout 5 sh -c %s", f"until {condition}; do sleep {poll}; done").rc == 0:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                record_run("deploy.yml (killed)", args, time.time() - (time.monotonic() - started), -9)
                return time.monotonic() - started
        raise AssertionError(f"'{condition}' never held during the deploy")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        output.close()


def changed_tasks(result):
    """(task, host) for each task that reported a change in a run's output (the default callback's
    "TASK [...]" headers and "changed: [host]" lines), in order, each pair once."""
    task, found = None, []
    for line in result.stdout.splitlines():
        header = re.match(r"^(?:TASK|RUNNING HANDLER) \[(.*)\] \*+$", line)
        if header:
            task = header.group(1)
            continue
        changed = re.match(r"^changed: \[([^\]]+)\]", line)
        if changed and (task, changed.group(1)) not in found:
            found.append((task, changed.group(1)))
    return found


def run_playbooks(arg_lists, workers=3, **kwargs):
    """run_playbook for each list of arguments, `workers` at a time; results in the same order.
    For independent runs that change nothing (the bad-input table): they run side by side."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: run_playbook(*a, **kwargs), arg_lists))


def container_ip(name):
    """The address of a test container on its podman network, as the controller reaches it."""
    out = subprocess.run(
        ["podman", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert out, f"{name} has no address"
    return out[0]


def crash_and_boot(name, timeout=180):
    """The test host loses power and boots again: its container is killed (every process at
    once, nothing more written) and started, and systemd boots it as a server boots, starting
    what is enabled at boot. It gets its address back (podman gives a container it starts again
    a new one), and the controller's shared SSH connection to it (Ansible's ControlPersist
    master, dead now) is ended, so that the next run connects anew, and the tests' one too.
    Returns when the boot is done."""
    def podman(*args):
        return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout.split()

    address = container_ip(name)
    network = podman("inspect", "-f", "{{range $net, $_ := .NetworkSettings.Networks}}{{$net}} {{end}}", name)[0]
    podman("kill", name)
    podman("start", name)
    if container_ip(name) != address:
        podman("network", "disconnect", network, name)
        podman("network", "connect", "--ip", address, network, name)
    assert container_ip(name) == address
    hv = inventory_host(name)
    cp_dir = os.path.expanduser(os.environ.get("ANSIBLE_SSH_CONTROL_PATH_DIR", "~/.ansible/cp"))
    for port in {hv.get("ansible_port"), None}:
        end_ssh_master(SSHConnection._create_control_path(  # the path Ansible gives its master
            hv["ansible_host"], port, hv["ansible_user"]) % {"directory": cp_dir})
    end_shared_connection(name)
    # Until systemd has its bus up (just after the start, `systemctl` cannot reach it: "Failed
    # to connect to bus"), then until the boot is done.
    deadline = time.monotonic() + timeout
    while True:
        booted = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running", "--wait"],
                                capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
        if booted.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert booted.stdout.strip() in ("running", "degraded"), booted


def serving(host, name=None):
    """(unit, port) of the app's instance that serves on the host (hello-api-a on 8000, say):
    the unit the deploy recorded, and the port its socket listens on."""
    name = name or SANDBOX_VARS["fastapi_service_name"]
    unit = host.check_output(f"cat /var/lib/fastapi-deploy/{name}.serving")
    socket_unit = host.file(f"/etc/systemd/system/{unit}.socket").content_string
    port = re.search(r"^ListenStream=.*:([0-9]+)$", socket_unit, re.M)
    assert port, socket_unit
    return unit, int(port.group(1))


def http_get(host, path, port=None, timeout=5, local_ports=None):
    """GET http://127.0.0.1:port/path on the host itself (port: the serving instance's), from
    a client port in `local_ports` (first, last) if given; returns (status, body)."""
    port = port or serving(host)[1]
    local = f"--local-port {int(local_ports[0])}-{int(local_ports[1])} " if local_ports else ""
    cmd = host.run(f"curl -sS {local}-m %s -w '\\n%%{{http_code}}' http://127.0.0.1:%s%s", str(timeout), str(port), path)
    body, _, status = cmd.stdout.rpartition("\n")
    return (int(status) if status.isdigit() else 0), body


def http_json(host, path, port=None):
    status, body = http_get(host, path, port)
    assert status == 200, f"GET {path}: {status} {body}"
    return json.loads(body)


def tls_context(cafile=None):
    if cafile:
        return ssl.create_default_context(cafile=str(cafile))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def https_get(address, path="/", port=443, timeout=10, headers=None, cafile=None, server_hostname=None):
    """GET https://address:port/path from the controller; the certificate is checked only
    against `cafile` when given. Returns (status, headers, body, tls_version)."""
    conn = http.client.HTTPSConnection(address, port, timeout=timeout, context=tls_context(cafile))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode(), conn.sock.version()
    finally:
        conn.close()


def https_json(address, path="/", timeout=10):
    """GET https://address/path (certificate not verified); asserts 200 and returns (JSON, TLS version)."""
    status, _, body, tls = https_get(address, path, timeout=timeout)
    assert status == 200, body
    return json.loads(body), tls


def served(address, n=24):
    """(hosts, versions) that answered n requests to https://address/."""
    seen_hosts, versions = set(), set()
    for _ in range(n):
        data, _ = https_json(address)
        seen_hosts.add(data["host"])
        versions.add(data["version"])
    return seen_hosts, versions


def main_pid(host, name):
    """The main process of a unit, or of the app `name`'s serving instance (asserted running)."""
    if host.file(f"/var/lib/fastapi-deploy/{name}.serving").exists:
        name = serving(host, name)[0]
    pid = host.check_output(f"systemctl show -p MainPID --value {name}")
    assert pid != "0", f"{name} has no main process"
    return pid


def worker_pids(host, name):
    """uvicorn's worker processes of the app `name`'s serving instance: its main process's
    children started by multiprocessing's spawn (not its resource tracker)."""
    pid = main_pid(host, name)
    children = host.check_output(f"cat /proc/{pid}/task/*/children").split()
    return [c for c in children if "spawn_main" in host.run(f"tr '\\0' ' ' < /proc/{c}/cmdline").stdout]


def sandbox_applied(host, pid):
    """Whether systemd gave the process its own mount namespace (ProtectSystem= and the rest)."""
    return host.check_output(f"readlink /proc/{pid}/ns/mnt") != host.check_output("readlink /proc/1/ns/mnt")


def current_release(host, root=ROOT):
    """The id of the release <root>/current points at on the host."""
    return host.check_output(f"readlink {root}/current").split("/")[-1]


def releases(host, root=ROOT):
    return sorted(host.check_output(f"ls -1 {root}/releases").split())


def app_copy(tmp_path_factory, name, main_py_extra=""):
    """A copy of the example app whose code differs (so that deploying it makes a new release)."""
    src = tmp_path_factory.mktemp(name) / "app"
    shutil.copytree(REPO_ROOT / "examples/hello_api", src)
    (src / "RELEASE_NOTE").write_text(f"{name}\n")
    if main_py_extra:
        main = src / "main.py"
        main.write_text(main.read_text() + main_py_extra)
    return src


def restore_converged_state(limit=None):
    """Deploy the scenario's own settings again, as converge did: a test module that changed
    what the hosts serve leaves them as it found them, so that every test file stands alone."""
    result = run_playbook(limit=limit)
    assert result.returncode == 0, "restoring the converged state failed:\n" + result.stdout[-4000:]
    return result


def _changed_marker():
    """Left in the scenario's ephemeral directory while the hosts may differ from converge."""
    return EPHEMERAL / "hosts-changed-by-a-test"


# A test module that sets this to True starts from whatever the hosts serve, as long as it
# serves: its first deploy gives every setting the module relies on (its other settings are the
# scenario's own), so the `converged` fixture does not deploy the converged state first.
ANY_SERVING_STATE = "STARTS_FROM_ANY_SERVING_STATE"


@pytest.fixture(scope="module", autouse=True)
def converged(request):
    """Every test module starts from the converged state (each scenario's conftest imports this
    fixture, which then applies to every module): if a module that changed what the hosts serve
    ran before (the `restore` fixture's marker), the scenario's settings are deployed again
    first, unless the module says it starts from any serving state (ANY_SERVING_STATE). The
    change a scenario's last module made is never undone: destroy follows. A module run by
    itself after it finds the marker and restores too."""
    if _changed_marker().exists() and not getattr(request.module, ANY_SERVING_STATE, False):
        restore_converged_state()
        _changed_marker().unlink()
    yield
    stop_leftover_loads()


@pytest.fixture(scope="module")
def restore(converged):
    """Use in a test module that changes what the hosts serve (each scenario's conftest
    imports it): the next module, or the next test run, starts by deploying the converged state
    again (the `converged` fixture). Marked before the module's first change, so that a module
    that fails or is killed half way is undone too."""
    _changed_marker().touch()
    yield


def stop_leftover_loads():
    """Kill the load generators that a failed test started and never stopped (each would load
    the machine for up to 25 minutes): at the end of every test module (the converged fixture)."""
    for proc in list(Load.running):
        proc.kill()
        proc.wait()
        Load.running.discard(proc)


def pytest_collection_modifyitems(items):
    """The test modules that change nothing (no `restore` fixture) run first, each in its own
    order, right after converge: they need no restore. The modules that change what the hosts
    serve follow, in file order, those that start from any serving state (ANY_SERVING_STATE)
    last: each change is then followed by a module that needs no restore where the order allows.
    (Each scenario's conftest imports this hook.)"""
    items.sort(key=lambda item: ("restore" in getattr(item, "fixturenames", ()),
                                 bool(getattr(getattr(item, "module", None), ANY_SERVING_STATE, False))))


# Each load client waits this long between its requests: 4 clients send about 35 requests a
# second through a balancer here, so any half second of a switch carries 15 or more, half of
# them POST (a host refusing for half a second shows in the client's and the balancer's
# figures). Twice that rate cost about 300 CPU-seconds of the suite's run on 2 cores (a new TLS
# connection per request on both ends) and showed nothing more.
LOAD_PAUSE = 0.1


class Load:
    """bench/loadgen.py on the controller against `url` until stop(): `concurrency` clients,
    a new connection per request (but the first `keep_alive` clients keep theirs open), the
    last `post` of them (half by default) sending POST, which nobody retries. stop() returns its
    figures (bench/loadgen.py's JSON); with `balancer` (a testinfra host whose nginx site `site`
    logs its upstream attempts: fastapi_proxy_upstream_log), also what the app hosts behind it
    saw: "upstream_lines" (requests the balancer logged for the load) and "upstream_failures"
    (those with an upstream attempt that did not answer 200, retried or not).

    `url` and `balancer` may be lists, one item per balancer of a fleet: the clients are then
    shared out among them (each gets a GET and a POST client at least), and stop() returns the
    figures of all of them together (counts added up, the worst latencies, the widest spans)."""

    running = set()  # loads started and not stopped (a test failed between): stop_leftover_loads()

    def __init__(self, url, concurrency=4, pause=LOAD_PAUSE, timeout=120, warmup=2.0, span_field="version", keep_alive=0,
                 post=None, balancer=None, site=PROXY_VARS["fastapi_proxy_name"]):
        urls = [url] if isinstance(url, str) else list(url)
        balancers = list(balancer) if isinstance(balancer, (list, tuple)) else [balancer] * len(urls)
        assert len(balancers) == len(urls), (urls, balancers)
        self._dir = tempfile.mkdtemp(prefix="load-")
        self.stop_file = Path(self._dir) / "stop"
        self.upstream_log = f"/var/log/nginx/fastapi-{site}-upstreams.log"
        # its own query on every request, so that the balancer's log tells its requests from any
        # other load's (one that a failed test left running until its module ends, for one)
        self.query = f"load={Path(self._dir).name.removeprefix('load-')}"
        n = len(urls)
        each = max(2, concurrency // n)
        self.parts = []
        for i, (one_url, one_balancer) in enumerate(zip(urls, balancers)):
            parts = urllib.parse.urlsplit(one_url)
            path = f"{parts.path or '/'}?{self.query}"
            target = urllib.parse.urlunsplit(parts._replace(path=parts.path or "/", query=self.query))
            proc = subprocess.Popen(
                [sys.executable, str(REPO_ROOT / "bench/loadgen.py"), target, "--requests", "10000000",
                 "--concurrency", str(each), "--pause", str(pause), "--max-seconds", "1500",
                 "--timeout", str(timeout), "--stop-file", str(self.stop_file), "--span-field", span_field,
                 "--keep-alive", str(keep_alive // n + (1 if i < keep_alive % n else 0)),
                 "--post", str(each // 2 if post is None else post // n + (1 if i < post % n else 0))],
                stdout=subprocess.PIPE, text=True)
            Load.running.add(proc)
            self.parts.append((proc, one_balancer, path))
        time.sleep(warmup)  # answered for a while before the change starts

    def stop(self, settle=2.0):
        time.sleep(settle)  # and after it ended
        self.stop_file.touch()
        figures = []
        for proc, balancer, path in self.parts:
            out, _ = proc.communicate(timeout=300)
            Load.running.discard(proc)
            stats = json.loads(out)
            if balancer is not None:
                lines = upstream_log(balancer, self.upstream_log, stats["started_at"], stats["ended_at"] + 1)
                mine = [line for line in lines if line["uri"] == path]
                stats["upstream_lines"] = len(mine)
                stats["upstream_failures"] = [line["raw"] for line in mine if upstream_failed(line)][:20]
            figures.append(stats)
        shutil.rmtree(self._dir, ignore_errors=True)
        stats = merge_load_figures(figures)
        # every load's figures, for the record (bench/ and the closing notes read them)
        with open(REPO_ROOT / ".cache" / f"loads-{SCENARIO_DIR.name}.jsonl", "a", encoding="utf-8") as record:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
            record.write(json.dumps({"test": test, **{k: v for k, v in stats.items() if k != "spans"}}) + "\n")
        return stats


def merge_load_figures(figures):
    """bench/loadgen.py's figures of loads run side by side (one per balancer) as one load's:
    counts added up, the earliest start and latest end, each version's widest span, the worst
    latencies (the p50 and p99 of the worst part: conservative, not a merged percentile)."""
    if len(figures) == 1:
        return figures[0]
    merged = {}
    for stats in figures:
        for key, value in stats.items():
            if key in ("errors", "versions", "hosts"):
                for k, v in value.items():
                    merged.setdefault(key, {})[k] = merged.get(key, {}).get(k, 0) + v
            elif key in ("failures_at_s", "upstream_failures"):
                merged[key] = (merged.get(key, []) + value)[:20]
            elif key == "spans":
                spans = merged.setdefault("spans", {})
                for version, (first, last) in value.items():
                    old = spans.get(version, [first, last])
                    spans[version] = [min(old[0], first), max(old[1], last)]
            elif key == "started_at":
                merged[key] = min(merged.get(key, value), value)
            elif key in ("ended_at", "seconds"):
                merged[key] = max(merged.get(key, value), value)
            elif key.endswith("_latency_s"):
                if value is not None and (merged.get(key) is None or value > merged[key]):
                    merged[key] = value
                    if key == "max_latency_s":
                        merged["slowest_started_at"] = stats["slowest_started_at"]
                else:
                    merged.setdefault(key, value)
            elif key == "slowest_started_at":
                merged.setdefault(key, value)
            else:  # counts
                merged[key] = merged.get(key, 0) + value
    merged["parts"] = len(figures)
    return merged


# A switch's latencies against the same load with no deploy (assert_load_spanned's baseline):
# the deploy itself loads the machine (Ansible, the new instance's start), so some slack over
# the baseline; a stop-then-start restart holds requests for the stop and the start (seconds:
# TimeoutStopSec in a container), which these bounds do not allow.
BASELINE_SECONDS = 8.0
# Where a stall is the design (a restart in place: requests wait in the socket's queue for a
# stop and a start), a request may wait fastapi_service_timeout_stop_sec (every stop waits it
# on cgroup v1 container hosts) and a start: uvicorn importing FastAPI took 10 s there with the
# four scenarios side by side on 2 cores. A stop that waited a default TimeoutStopSec (90 s),
# or a lost request, breaks it all the same.
START_SLACK = 20.0
P99_SLACK = 0.5
MAX_SLACK = 3.0


def latency_baseline(url, balancer=None, **load_args):
    """The same load as the load tests' (Load's arguments), for BASELINE_SECONDS with no
    deploy, on the same hosts: what latencies are on this machine now. Fails if it failed."""
    load = Load(url, balancer=balancer, **load_args)
    time.sleep(BASELINE_SECONDS)
    stats = load.stop()
    assert stats["failed"] == 0 and not stats.get("upstream_failures"), f"the baseline load failed: {stats}"
    return stats


@pytest.fixture(scope="module")
def baseline(url, balancer_host):
    """latency_baseline once for a test module, before its first load test (each scenario's
    conftest imports it, and gives `url` and `balancer_host`)."""
    return latency_baseline(url, balancer_host)


def upstream_log(balancer, path, since, until):
    """The lines of a balancer's upstream log (fastapi_proxy_upstream_log) written from `since`
    to `until` (Unix time), parsed: time, method, status (the client's), addrs and statuses (one
    per upstream attempt), uri, raw."""
    out = balancer.check_output(f"awk -v a={since} -v b={until} '$1 >= a && $1 <= b' {path}")
    lines = []
    for raw in out.splitlines():
        m = re.match(r'^(\S+) (\S+) (\d+) "([^"]*)" "([^"]*)" \S+ "[^"]*" "([^"]*)"$', raw)
        assert m, f"not an upstream log line: {raw!r}"
        lines.append({"time": float(m.group(1)), "method": m.group(2), "status": m.group(3),
                      "addrs": re.split(r", | : ", m.group(4)), "statuses": re.split(r", | : ", m.group(5)),
                      "uri": m.group(6), "raw": raw})
    return lines


def upstream_failed(line):
    """An upstream attempt of this request failed: refused, reset, timed out or answered other
    than 200 (nginx logs "502, 200" when it retried on the next app host, "-" with no attempt)."""
    return any(status != "200" for status in line["statuses"])


class HostLoad:
    """bench/loadgen.py on a test host itself, against `url` there (the app's own socket, with no
    nginx between: nginx retries a GET whose upstream connection failed, which would hide it),
    until stop(). Same arguments and figures as Load."""

    def __init__(self, host, instance, url, concurrency=4, pause=LOAD_PAUSE, timeout=120, warmup=2.0, span_field="version"):
        self.host = host
        subprocess.run(["podman", "cp", str(REPO_ROOT / "bench/loadgen.py"), f"{instance}:/tmp/loadgen.py"], check=True)
        host.run(f"rm -f /tmp/load.json /tmp/load.stop; nohup python3 /tmp/loadgen.py {url} --requests 10000000"
                 f" --concurrency {concurrency} --pause {pause} --max-seconds 1500 --timeout {timeout}"
                 f" --stop-file /tmp/load.stop --span-field {span_field} > /tmp/load.json 2>/tmp/load.err &")
        time.sleep(warmup)

    def stop(self, settle=2.0):
        time.sleep(settle)
        self.host.run("touch /tmp/load.stop")
        for _ in range(600):
            if self.host.file("/tmp/load.json").size > 0:
                break
            time.sleep(0.5)
        return json.loads(self.host.file("/tmp/load.json").content_string)


def assert_latency_within(stats, baseline):
    """The load's p99 and maximum latency within P99_SLACK and MAX_SLACK of the baseline's."""
    for key, slack in (("p99_latency_s", P99_SLACK), ("max_latency_s", MAX_SLACK)):
        assert stats[key] <= baseline[key] + slack, \
            f"{key} {stats[key]} s against {baseline[key]} s with no deploy (+{slack} s allowed): {stats}"


def assert_load_spanned(stats, run, before, after, baseline=None, max_latency=None, min_each=20):
    """The load ran across the whole deploy `run` (started before, ended after), failed no
    request, had answers from version `before` before the deploy ended and from `after` after
    it started (min_each of each, when both are given), answered both GET and POST clients, and
    kept its latencies near the `baseline` load's (assert_latency_within), or, where a stall is
    the design (the app-only takeover of its port), within `max_latency` seconds. With the balancer's upstream log (Load's
    `balancer`): no upstream attempt failed, even one that nginx retried on another app host."""
    assert stats["failed"] == 0, stats
    if stats.get("post_clients"):
        assert stats["post_ok"] > 0 and stats["get_ok"] > 0, f"both GET and POST answered: {stats}"
    if "upstream_lines" in stats:  # what the app hosts saw, not only the client
        assert stats["upstream_failures"] == [], f"an upstream attempt failed (the balancer's log): {stats}"
        assert stats["upstream_lines"] >= stats["ok"], f"the balancer logged fewer requests than answered: {stats}"
    assert stats["started_at"] < run.started and stats["ended_at"] > run.ended, \
        f"the load did not span the deploy ({stats['started_at']}-{stats['ended_at']} vs {run.started}-{run.ended})"
    spans = stats["spans"]
    for version in {before, after}:
        assert stats["versions"].get(version, 0) >= min_each, (version, stats)
    assert spans[before][0] < run.started, f"{before} answered before the deploy: {spans}"
    assert spans[after][1] > run.ended, f"{after} answered after the deploy: {spans}"
    if baseline is not None:
        assert_latency_within(stats, baseline)
    else:
        assert stats["max_latency_s"] <= max_latency, \
            f"a request waited {stats['max_latency_s']} s (at most {max_latency} s allowed): {stats}"


class BackendWatcher(threading.Thread):
    """Watches a load balancer's upstream files while a deploy runs and records, for each app
    host, every 'server' line it had, in order (address:port and flags): `moves[host]` is
    that sequence and `moved_at[host]` when each was first seen, `seen_down` the hosts ever marked down, `most_down_at_once` the most hosts
    down at the same time. The first reading is taken before start() returns. One command on
    the balancer reads the files every `interval` seconds and streams them (a command per
    reading, even over SSH, would cost a good part of a core)."""

    END = "--- end of reading ---"

    def __init__(self, lb_host, name, interval=0.2):
        super().__init__(daemon=True)
        self.lb_host, self.directory = lb_host, f"/etc/nginx/fastapi-backends/{name}"
        self.seen_down, self.most_down_at_once = set(), 0
        self.moves, self.moved_at = {}, {}
        self._stop_file = f"/run/backend-watcher-{os.getpid()}-{id(self)}.stop"
        # through podman, as every reading: a test may stop the balancer's sshd
        self.console = console(lb_host.instance)
        self._read(self.console.run(self._grep()).stdout.splitlines())
        loop = (f"while [ ! -e {self._stop_file} ]; do {self._grep()}; echo '{self.END}'; sleep {interval}; done;"
                f" rm -f {self._stop_file}")
        self.proc = subprocess.Popen(["podman", "exec", lb_host.instance, "sh", "-c", loop],
                                     stdout=subprocess.PIPE, text=True)

    def _grep(self):
        return f"grep -H '^server ' {self.directory}/*.conf 2>/dev/null || true"

    def _read(self, lines):
        down = set()
        for line in lines:
            path, _, server = line.partition(":")
            host = Path(path).stem
            seen = self.moves.setdefault(host, [])
            if not seen or seen[-1] != server:
                seen.append(server)
                self.moved_at.setdefault(host, []).append(time.time())
            if " down" in server:
                down.add(host)
        self.seen_down |= down
        self.most_down_at_once = max(self.most_down_at_once, len(down))

    def run(self):
        reading = []
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line == self.END:
                self._read(reading)
                reading = []
            else:
                reading.append(line)

    def stop(self):
        self.console.run(f"touch {self._stop_file}")
        self.proc.wait(timeout=60)
        self.join(timeout=30)
        self._read(self.console.run(self._grep()).stdout.splitlines())
        return self

    def ports(self, host):
        """The ports the balancer sent the host's requests to, in order."""
        return [int(re.search(r":([0-9]+) ", server).group(1)) for server in self.moves.get(host, [])]


# --- the SSH transport, shared by the container and VM scenarios -----------------------------

def ansible_as_user(name, module_args, become=False, known_hosts=None, tmp_path=None):
    """Run one ad-hoc Ansible command on host `name` with the scenario's own inventory and
    settings. With known_hosts, the scenario's known_hosts file holds that text meanwhile (the
    settings are not touched), and a new SSH connection is made (none is reused)."""
    args = ["ansible", "-i", str(INVENTORY), name, "-m", "ansible.builtin.command", "-a", module_args,
            "-o", "-T", "15"]
    if become:
        args.append("-b")
    env = ansible_env()
    if known_hosts is None:
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    original = EPHEMERAL / "known_hosts"
    saved = original.read_text()
    env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(tmp_path)  # a new connection, checked again
    try:
        original.write_text(known_hosts)
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    finally:
        original.write_text(saved)


def molecule_ssh_settings():
    """The [ssh_connection] settings of the ansible.cfg Molecule wrote, and of the project's."""
    def read(path):
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.read(path)
        return {"pipelining": cfg.getboolean("ssh_connection", "pipelining"),
                "ssh_args": cfg.get("ssh_connection", "ssh_args").split()}, cfg
    molecule, molecule_cfg = read(EPHEMERAL / "ansible.cfg")
    project, _ = read(REPO_ROOT / "ansible.cfg")
    return molecule, project, molecule_cfg


class Notifier:
    """What a deploy's notifiers receive, on the controller: `args()` are the -e options of a
    run with a command notifier (appends FASTAPI_DEPLOY_JSON and two variables to a file), a
    webhook (a local HTTP server keeping the JSON it is POSTed), and the `broken` notifiers as
    well (commands that fail or hang, a webhook that answers 500) when asked. `events()` and
    `posted` are what arrived, in order."""

    def __init__(self, tmp_path):
        import http.server

        self.file = Path(tmp_path) / "events.jsonl"
        self.posted = []
        notifier = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                notifier.posted.append(json.loads(body))
                self.send_response(500 if self.path == "/broken" else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def args(self, broken=False):
        commands = [f"printf '%s\\n' \"$FASTAPI_DEPLOY_JSON\" >> {self.file}",
                    f"echo \"$FASTAPI_DEPLOY_EVENT $FASTAPI_DEPLOY_USER\" >> {self.file}.env"]
        if broken:
            commands += ["echo broken >&2; exit 3", "sleep 60"]
        return ["-e", json.dumps({"fastapi_deploy_notify_commands": commands,
                                  "fastapi_deploy_notify_webhook_url": self.url.replace("/hook", "/broken") if broken else self.url,
                                  "fastapi_deploy_notify_timeout": 3})]

    def events(self):
        if not self.file.exists():
            return []
        return [json.loads(line) for line in self.file.read_text().splitlines()]

    def clear(self):
        self.file.unlink(missing_ok=True)
        self.posted.clear()

    def close(self):
        self.server.shutdown()


def lock_holder(host, name=None):
    """The holder of the app's deploy lock on a host ({} when free)."""
    name = name or SANDBOX_VARS["fastapi_service_name"]
    path = f"/var/lib/fastapi-deploy/{name}.lock"
    return json.loads(host.file(path).content_string) if host.file(path).exists else {}


def deploy_log(host, name=None):
    """The records of the app's deploy log on a host, oldest first."""
    name = name or SANDBOX_VARS["fastapi_service_name"]
    path = f"/var/log/fastapi-deploy/{name}.log"
    return [json.loads(line) for line in host.file(path).content_string.splitlines()] if host.file(path).exists else []
