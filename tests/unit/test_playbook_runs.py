"""scripts/playbook_runs.py: the per-test sum of the playbook runs a scenario's tests made."""

import importlib.util
import json
from pathlib import Path

SPEC = importlib.util.spec_from_file_location(
    "playbook_runs", Path(__file__).resolve().parents[2] / "scripts/playbook_runs.py")
playbook_runs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(playbook_runs)


def line(test, seconds, results=10):
    return json.dumps({"test": test, "playbook": "deploy.yml", "args": [], "seconds": seconds,
                       "rc": 0, "task_results": results})


def test_runs_are_summed_per_test():
    per_test, totals = playbook_runs.summarize([line("a.py::t1", 10.5), line("a.py::t1", 2, 5), "\n",
                                                line("", 1), line("b.py::t2", 3)])
    assert per_test["a.py::t1"] == [2, 12.5, 15]
    assert per_test["(outside a test)"] == [1, 1, 10]
    assert totals == [4, 16.5, 35]


def test_costliest_first_and_a_missing_log_is_no_error(tmp_path, capsys):
    log = tmp_path / "runs.jsonl"
    log.write_text("\n".join([line("cheap", 1), line("dear", 50)]) + "\n")
    assert playbook_runs.main([str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("playbook runs by the tests: 2 runs, 51 s")
    assert out[1].endswith("dear") and out[2].endswith("cheap")
    assert playbook_runs.main([str(tmp_path / "none.jsonl")]) == 0
    assert "no playbook runs recorded" in capsys.readouterr().out
