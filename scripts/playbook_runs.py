#!/usr/bin/env python3
"""Where a scenario's test time goes: the playbook runs its tests made (the lines
molecule/resources/deploytest.py appends to .cache/playbook-runs-<scenario>.jsonl),
summed per test, the costliest first.
    scripts/playbook_runs.py .cache/playbook-runs-cluster.jsonl [--top N]
"""

import argparse
import json
from collections import defaultdict


def summarize(lines):
    """{test: [runs, seconds, task results]} from the JSON lines, and the totals."""
    per_test = defaultdict(lambda: [0, 0.0, 0])
    for line in lines:
        if not line.strip():
            continue
        run = json.loads(line)
        row = per_test[run["test"] or "(outside a test)"]
        row[0] += 1
        row[1] += run["seconds"]
        row[2] += run.get("task_results", 0)
    totals = [sum(row[i] for row in per_test.values()) for i in range(3)]
    return dict(per_test), totals


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    try:
        with open(args.log, encoding="utf-8") as log:
            per_test, (runs, seconds, results) = summarize(log)
    except FileNotFoundError:
        print(f"no playbook runs recorded ({args.log})")
        return 0
    print(f"playbook runs by the tests: {runs} runs, {seconds:.0f} s, {results} task results; costliest tests:")
    for test, (n, secs, res) in sorted(per_test.items(), key=lambda item: -item[1][1])[:args.top]:
        print(f"  {secs:6.0f} s {n:3d} runs {res:5d} results  {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
