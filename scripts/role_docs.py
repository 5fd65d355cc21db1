#!/usr/bin/env python3
"""Rewrite the variables table of each role's README.md from its meta/argument_specs.yml.

The table sits between the lines <!-- BEGIN VARIABLES --> and <!-- END VARIABLES -->.
    .venv/bin/python scripts/role_docs.py          # rewrite
    .venv/bin/python scripts/role_docs.py --check  # exit 1 if a README is out of date
"""

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- BEGIN VARIABLES -->", "<!-- END VARIABLES -->"


def table(spec_file: Path) -> str:
    options = yaml.safe_load(spec_file.read_text())["argument_specs"]["main"]["options"]
    rows = ["| variable | type | default | what |", "|---|---|---|---|"]
    for name, opt in options.items():
        desc = opt.get("description", "")
        desc = " ".join(desc) if isinstance(desc, list) else desc
        if opt.get("required"):
            default = "required"
        elif "default" not in opt:
            default = "(see defaults/main.yml)"
        else:
            value = opt["default"]
            default = "`" + (yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip().removesuffix("...").strip()
                             if value != "" else '""') + "`"
        rows.append(f"| `{name}` | {opt['type']} | {default} | {desc.replace('|', '/')} |")
    return "\n".join(rows)


def main() -> int:
    stale = []
    for readme in sorted(ROOT.glob("roles/*/README.md")):
        text = readme.read_text()
        if BEGIN not in text:
            continue
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{BEGIN}\n{table(readme.parent / 'meta/argument_specs.yml')}\n{END}{tail}"
        if new != text:
            stale.append(str(readme.relative_to(ROOT)))
            if "--check" not in sys.argv:
                readme.write_text(new)
    if stale and "--check" in sys.argv:
        print("out of date (run scripts/role_docs.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
