"""Bad input: each is refused with a clear error naming the variable and the fix, before
anything on the host changes. The host serves the app (converge ran): its units, environment
file, code, releases, main process, deploy lock (none taken) and deploy log (nothing logged)
must be the same afterwards, and it must still serve.

The runs change nothing and share nothing, so they run side by side (deploytest.run_playbooks),
once for the module; each case then checks its own output."""

import json

import pytest

from deploytest import ROOT, deploy_log, http_get, lock_holder, main_pid, release_lock, run_playbook, run_playbooks

BAD_INPUTS = [
    # (id, extra vars, words the error must contain)
    ("fastapi-version-empty", {"fastapi_app_fastapi_version": ""},
     ["fastapi_app_fastapi_version", "does not pin FastAPI", "exact version such as"]),
    ("fastapi-version-latest", {"fastapi_app_fastapi_version": "latest"},
     ["fastapi_app_fastapi_version is 'latest'", "patch range"]),
    ("fastapi-version-unbounded", {"fastapi_app_fastapi_version": ">=0.100.0"},
     ["fastapi_app_fastapi_version is '>=0.100.0'", "does not pin FastAPI"]),
    ("fastapi-version-malformed", {"fastapi_app_fastapi_version": "0.165"},
     ["fastapi_app_fastapi_version is '0.165'", "does not pin FastAPI"]),
    ("fastapi-version-range-too-wide", {"fastapi_app_fastapi_version": ">=0.165.0,<0.167.0"},
     ["fastapi_app_fastapi_version", "the upper bound is the next minor"]),
    ("lock-file-pins-another-fastapi", {"fastapi_app_fastapi_version": "0.164.0"},
     ["pins fastapi at\n'0.165.0'", "fastapi_app_fastapi_version '0.164.0'", "Regenerate the lock file"]),
    ("reload-in-extra-args", {"fastapi_service_extra_args": ["--log-level", "info", "--reload"]},
     ["fastapi_service_extra_args contains --reload", "development only", "Remove it"]),
    ("reload-dir-in-extra-args", {"fastapi_service_extra_args": ["--reload-dir=/srv"]},
     ["fastapi_service_extra_args contains --reload-dir=/srv"]),
    ("port-not-a-number", {"fastapi_service_port": "http"},
     ["fastapi_service_port"]),
    ("port-too-large", {"fastapi_service_port": 70000},
     ["fastapi_service_port is '70000'", "integer from 1 to 65535"]),
    ("port-zero", {"fastapi_service_port": 0},
     ["fastapi_service_port is '0'", "integer from 1 to 65535"]),
    ("workers-zero", {"fastapi_service_workers": 0},
     ["fastapi_service_workers is '0'", "integer of 1 or\nmore"]),
    ("import-string-without-colon", {"fastapi_service_app": "main.app"},
     ["fastapi_service_app is 'main.app'", "'module:attribute'"]),
    ("import-string-with-path", {"fastapi_service_app": "app/main.py:app"},
     ["fastapi_service_app is 'app/main.py:app'", "'module:attribute'"]),
    ("source-missing", {"fastapi_app_src": "/nonexistent/my-app"},
     ["fastapi_app_src is '/nonexistent/my-app', which is not a directory on the controller"]),
    ("lock-file-missing", {"fastapi_app_requirements_lock": "/nonexistent/requirements.lock"},
     ["fastapi_app_requirements_lock is '/nonexistent/requirements.lock', which is not a file",
      "pip-compile --generate-hashes"]),
    ("wheelhouse-without-wheels", {"fastapi_app_wheelhouse": "/etc"},
     ["fastapi_app_wheelhouse is '/etc', which is not a directory of wheels", "scripts/wheelhouse.sh"]),
    ("unknown-service-variable", {"fastapi_service_prot": 8080},
     ["Unknown variable(s) fastapi_service_prot", "fastapi_service_port"]),
    ("unknown-app-variable", {"fastapi_app_fastapi_verison": "0.165.0"},
     ["Unknown variable(s) fastapi_app_fastapi_verison"]),
    ("stop-timeout-below-graceful", {"fastapi_service_timeout_graceful_shutdown": 30,
                                     "fastapi_service_timeout_stop_sec": 10},
     ["fastapi_service_timeout_stop_sec (10)", "larger than"]),
    ("rollout-batch-zero", {"fastapi_deploy_serial": 0},
     ["fastapi_deploy_serial is '0'", "1 or more), or a percentage"]),
    ("certificate-without-key", {"fastapi_proxy_tls_certificate": "/etc/hostname"},
     ["fastapi_proxy_tls_certificate ('/etc/hostname') and fastapi_proxy_tls_certificate_key must both be set"]),
    ("proxy-body-size-malformed", {"fastapi_proxy_client_max_body_size": "10 MB"},
     ["fastapi_proxy_client_max_body_size is '10 MB'", "such as '10m'"]),
    ("proxy-old-tls", {"fastapi_proxy_tls_protocols": ["TLSv1", "TLSv1.2"]},
     ["fastapi_proxy_tls_protocols is", "use TLSv1.2 and/or TLSv1.3"]),
    ("unknown-proxy-variable", {"fastapi_proxy_hsts_maxage": 5},
     ["Unknown variable(s) fastapi_proxy_hsts_maxage", "fastapi_proxy_hsts_max_age"]),
    # values that would change the meaning of a unit file
    ("bind-address-with-a-flag", {"fastapi_service_host": "127.0.0.1 --reload"},
     ['fastapi_service_host is "127.0.0.1 --reload"', "give one address to listen on"]),
    ("root-path-with-a-newline", {"fastapi_service_root_path": "/api\nExecStartPre=/bin/true"},
     ["fastapi_service_root_path is", "ExecStartPre", "no trailing slash"]),
    ("health-path-with-a-space", {"fastapi_service_health_path": "/health -o /etc/passwd"},
     ['fastapi_service_health_path is "/health -o /etc/passwd"', "give a path such as /health"]),
    ("trusted-proxies-with-a-space", {"fastapi_service_forwarded_allow_ips": "127.0.0.1, 10.0.0.1"},
     ['fastapi_service_forwarded_allow_ips is "127.0.0.1, 10.0.0.1"', "(no spaces)"]),
    ("trusted-proxies-every-ipv4-address", {"fastapi_service_forwarded_allow_ips": "127.0.0.1,0.0.0.0/0"},
     ["fastapi_service_forwarded_allow_ips holds 0.0.0.0/0, a network of every address", "like '*'"]),
    ("trusted-proxies-every-ipv6-address", {"fastapi_service_forwarded_allow_ips": "::/0"},
     ["fastapi_service_forwarded_allow_ips holds ::/0, a network of every address"]),
    ("unit-line-with-a-newline", {"fastapi_service_unit_extra": ["Nice=5\nUser=root"]},
     ["fastapi_service_unit_extra may not hold a newline"]),
    ("extra-arg-with-a-newline", {"fastapi_service_extra_args": ["--header", "a:b\nExecStartPre=/bin/true"]},
     ["fastapi_service_extra_args and fastapi_service_unit_extra may not hold a newline"]),
    ("app-root-with-a-space", {"fastapi_service_app_root": "/srv/my api"},
     ['fastapi_service_app_root is "/srv/my api"', "give an absolute path"]),
    # wrong types: each role's whole argument spec applies in the check play
    ("limit-nofile-not-a-number", {"fastapi_service_limit_nofile": "lots"},
     ["fastapi_service_limit_nofile is 'lots'", "such as 65536, or 'infinity'"]),
    ("keep-releases-not-a-number", {"fastapi_app_keep_releases": "all"},
     ["argument 'fastapi_app_keep_releases' is of type str", "cannot be converted to an int"]),
    ("hsts-not-a-boolean", {"fastapi_proxy_hsts": "maybe"},
     ["argument 'fastapi_proxy_hsts' is of type str", "not a valid boolean"]),
    ("hsts-a-string-false", {"fastapi_proxy_hsts": "false"},
     ["fastapi_proxy_hsts: give true or false, not a string", "\"fastapi_proxy_hsts\": false"]),
    ("sandbox-a-string-no", {"fastapi_service_sandbox": "no"},
     ["fastapi_service_sandbox: give true or false, not a string"]),
    ("extra-args-not-a-list", {"fastapi_service_extra_args": {"--log-level": "info"}},
     ["argument 'fastapi_service_extra_args' is of type dict"]),
    ("firewall-source-not-an-address", {"fastapi_firewall_allowed_sources": ["monitoring.example.com"]},
     ["fastapi_firewall_allowed_sources has entries that are not IP addresses", "monitoring.example.com"]),
    # unsafe settings: refused with why and what to use instead
    ("trusted-proxies-anyone", {"fastapi_service_forwarded_allow_ips": "*"},
     ['fastapi_service_forwarded_allow_ips is "*"', "'*' is refused", "set its own address and scheme"]),
    ("app-user-root", {"fastapi_service_user": "root"},
     ['fastapi_service_user is "root"', "root is refused", "let the proxy listen there"]),
    ("unit-line-changes-the-user", {"fastapi_service_unit_extra": ["Nice=5", "User=root"]},
     ["fastapi_service_unit_extra sets User=root", "use fastapi_service_user"]),
    ("unit-line-runs-a-root-command", {"fastapi_service_unit_extra": ["ExecStartPre=+/bin/chmod 0777 /srv/fastapi"]},
     ["fastapi_service_unit_extra has lines that give the app privileges: ExecStartPre=+/bin/chmod 0777 /srv/fastapi",
      "runs it as root", "fastapi_service_unit_extra_privileged: true"]),
    ("unit-line-gives-a-capability", {"fastapi_service_unit_extra": ["AmbientCapabilities=CAP_NET_BIND_SERVICE"]},
     ["give the app privileges: AmbientCapabilities=CAP_NET_BIND_SERVICE"]),
    ("app-port-is-the-ssh-port", {"fastapi_service_port": 22},
     ["fastapi_firewall_app_ports ([22, 23]) includes 22, the SSH port", "lock Ansible and you out"]),
    ("environment-value-a-list", {"fastapi_app_environment": {"HOSTS": ["a", "b"], "OK": "x"}},
     ["fastapi_app_environment: HOSTS.", "must be a string, a number or true/false"]),
    ("secret-with-a-nul", {"fastapi_app_secret_environment": {"TOKEN": "abc\u0000def-planted"}},
     ["fastapi_app_secret_environment: TOKEN.", "without a NUL character"]),
    ("exclude-pattern-an-option", {"fastapi_app_src_exclude_extra": ["--files-from=/etc/shadow"]},
     ["fastapi_app_src_exclude_extra have patterns that cannot be used: [\"--files-from=/etc/shadow\"]"]),
    ("exclude-pattern-everything", {"fastapi_app_src_exclude_extra": ["*"]},
     ["cannot be used: [\"*\"]", "not one that leaves out everything"]),
    ("app-root-with-dot-dot", {"fastapi_app_root": "/srv/fastapi/../etc"},
     ['fastapi_app_root is "/srv/fastapi/../etc"', "no '.' or '..' parts"]),
]


def _state(host, name):
    return {
        "units": host.check_output(f"ls -l /etc/systemd/system/{name}* && cat /etc/systemd/system/{name}* | sha256sum"),
        "serving": host.check_output(f"cat /var/lib/fastapi-deploy/{name}.serving"),
        "current": host.check_output(f"readlink {ROOT}/current"),
        "releases": host.check_output(f"ls -1 {ROOT}/releases"),
        "env": host.file(f"{ROOT}/current/app.env").sha256sum,
        "code": host.check_output(f"find {ROOT}/current/app/ -type f | sort | xargs sha256sum"),
        "nginx": host.check_output("cat /etc/nginx/conf.d/*.conf /etc/nginx/fastapi-backends/*/*.conf | sha256sum"),
        "main_pid": main_pid(host, name),
        # no lock taken, nothing logged: a refused input is not a run
        "lock": host.run(f"cat /var/lib/fastapi-deploy/{name}.lock").stdout,
        "deploy_log": host.run(f"sha256sum /var/log/fastapi-deploy/{name}.log").stdout,
    }


@pytest.fixture(scope="module")
def runs(host, name):
    """Every bad input's deploy, run side by side, with the host's state before and after."""
    before = _state(host, name)
    assert http_get(host, "/health")[0] == 200
    results = run_playbooks([["-e", json.dumps(b[1])] for b in BAD_INPUTS])
    return before, dict(zip([b[0] for b in BAD_INPUTS], results)), _state(host, name)


@pytest.mark.parametrize("case,expected", [(b[0], b[2]) for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_refused_before_the_host_changes(host, runs, case, expected):
    before, results, after = runs
    result = results[case]
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "planted" not in out, "a refused secret was printed"
    for words in expected:
        assert " ".join(words.split()) in result.flat, f"{words!r} not in the output:\n{out}"
    # The check play stopped everything: no later play started.
    assert "PLAY [Put nginx in front" not in out
    assert "PLAY [Prepare every app host" not in out
    assert after == before, "a bad input changed the host"
    assert http_get(host, "/health")[0] == 200


def test_good_input_passes_check_mode_which_takes_no_lock_and_warns_of_one(host, name):
    """The same run without bad input goes through in --check mode, and changes nothing: not
    even the deploy lock, here held by a maintenance lock, which it names and warns of (a real
    run would stop there), nor the deploy log."""
    taken = run_playbook("-e", "fastapi_deploy_lock_action=acquire", "-e", "fastapi_deploy_message='check-mode probe'",
                         playbook="lock.yml")
    assert taken.returncode == 0, taken.stdout[-3000:]
    try:
        holder, log = lock_holder(host, name), deploy_log(host, name)
        result = run_playbook(check=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "changed=0" in result.stdout
        assert "WARNING:" in result.flat and "check-mode probe" in result.flat and "A real run would stop here" in result.flat, \
            result.flat[-3000:]
        assert lock_holder(host, name) == holder and deploy_log(host, name) == log
    finally:
        assert release_lock().returncode == 0


def test_an_existing_account_as_the_app_user_is_refused_before_the_host_changes(host, name):
    """fastapi_host_user naming an account the role did not make (www-data, nginx's workers here)
    is refused on the host, before its packages, users or app change: the account keeps its home
    and shell, the app serves on from the same process, the lock is given back, and the error
    names the setting and the opt-in."""
    account = host.check_output("getent passwd www-data")
    before = {k: v for k, v in _state(host, name).items() if k != "deploy_log"}
    result = run_playbook("-e", "fastapi_host_user=www-data")
    assert result.returncode != 0
    assert "fastapi_host_user is 'www-data', an account that already exists" in result.flat, result.flat[-3000:]
    assert "fastapi_host_user_adopt: true" in result.flat
    assert host.check_output("getent passwd www-data") == account
    assert {k: v for k, v in _state(host, name).items() if k != "deploy_log"} == before
    assert deploy_log(host, name)[-1]["result"] == "failed"
    assert http_get(host, "/health")[0] == 200
