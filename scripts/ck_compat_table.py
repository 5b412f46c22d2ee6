#!/usr/bin/env python3
"""Generate docs/ck-compatibility.md's package-family table from a CK repo (default: mlcommons@ck-mlops).

Each package entry is classified by ``ckx.software.ckpackage.install_tier`` (the function ckx itself uses
at install time and in ``ckx search package --installable``) with its default variation; entries are
grouped into families by alias prefix (``lib-python-*``, ``lib-tensorflow-*``, ``dataset-*``, ``model-*``,
``tool-*``, ...). Families of fewer than three entries are gathered under "other".

    python scripts/ck_compat_table.py                  # rewrite docs/ck-compatibility.md
    python scripts/ck_compat_table.py --check          # exit 1 when the file is out of date
    python scripts/ck_compat_table.py --repo DIR --output FILE
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ckx.software.ckpackage import CK_SCRIPT, NATIVE, REFUSED, install_tier  # noqa: E402
from ckx.store.repo import Repo  # noqa: E402

DEFAULT_REPO = ROOT.parent / "shared" / "ck-mlops" / "repo"
DEFAULT_OUTPUT = ROOT / "docs" / "ck-compatibility.md"
GUIDE_HEADING = "## Guide lines"
SMALL_FAMILY = 3
# Prefixes split one level further (lib-python-*, lib-tensorflow-*, ml-model-*); their small families
# (under SMALL_LIB entries) stay under the one-level name (lib-*).
TWO_PART = ("lib", "ml")
SMALL_LIB = 5

HEADER = """# CK compatibility

ckx reads CK-format repos (such as mlcommons@ck-mlops) in place and installs their packages in two tiers:

- **native**: the package only fetches or pip-installs (the shared `download-and-install-package` script with
  `PACKAGE_WGET`/`PACKAGE_GIT` and its unpack switches and nothing to configure, make, patch or copy; the
  `DOWNLOAD_URL`/`DOWNLOAD_FILE`/`DOWNLOAD_FILE_MD5` script; CK's Python-package script with
  `PYTHON_PACKAGE_NAME`/`PIP_INSTALL_OPTIONS`/`PACKAGE_VERSION`). ckx's own fetch (URL map, resume, cache),
  checksum, unpack, git and pip do the work; no shell script runs.
- **ck-script**: the package builds, patches, copies or brings its own `install.sh` / `scripts.linux/*.sh`.
  ckx runs the scripts as CK does, with CK's environment (`INSTALL_DIR`, `PACKAGE_DIR`, `ORIGINAL_PACKAGE_DIR`,
  `CK_TARGET_OS_ID`, the `install_env` values, the deps' variables), in a staging directory (seen under its
  final path) that moves into place only on success, with a timeout (`CKX_CK_SCRIPT_TIMEOUT`) and the log kept in `$CKX_HOME/logs`. ckx fetches
  the shared script's download or clone itself first. Only for repos the user pulled or added, never for one
  that arrived in an archive.
- **refused**, with the reason: a `custom.py` (CK's Python hooks, which call CK's kernel API), no Linux script,
  a package for other operating systems only, scripts that call the `ck` command.

An installed CK package's env carries what its CK soft entry would set: `<env_prefix>` (the install root),
`_BIN`/`_LIB`/`_INCLUDE`/`_FILE` where they exist, `PYTHONPATH` for Python packages, the model names of
`script:process-model` (`ML_MODEL_*`, `<prefix>_ROOT`, ...). CK's checksum fields (`PACKAGE_MD5`,
`DOWNLOAD_FILE_MD5`, ...) are verified where present; otherwise the env records the sha256 of what was fetched.
`ckx search package --installable` lists what ckx installs, with the tier.

## Package families
"""


def family_of(alias: str) -> str:
    """The family an alias belongs to: ``lib-python-*``, ``ml-model-*``, ``tool-*``, ..."""
    parts = alias.split("-")
    if len(parts) > 2 and parts[0] in TWO_PART:
        return f"{parts[0]}-{parts[1]}-*"
    return f"{parts[0]}-*" if len(parts) > 1 else alias


def reason_kind(reason: str) -> str:
    """A reason with the package-specific parts taken out, so a family's reasons can be counted."""
    text = re.sub(r"pip-installs \S+", "pip-installs PYTHON_PACKAGE_NAME", reason)
    text = re.sub(r"applies \d+ patch\(es\)", "applies patches", text)
    text = re.sub(r"custom\.py [^)]*\)", "custom.py)", text)
    text = re.sub(r" \((unzip|ungzip|untar|unbzip|unxtar)(, (unzip|ungzip|untar|unbzip|unxtar))*\)", "", text)
    text = re.sub(r"PACKAGE_BUILD_TYPE=\w+", "PACKAGE_BUILD_TYPE", text)
    return text


def classify_repo(repo_dir: Path) -> dict[str, tuple[str, str]]:
    repo = Repo("ck-mlops", repo_dir, "ck")
    result = {}
    for entry in sorted((repo_dir / "package").iterdir()):
        meta_path = entry / ".cm" / "meta.json"
        if entry.name.startswith(".") or not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        result[entry.name] = install_tier(meta, entry, repo)
    return result


def build_table(tiers: dict[str, tuple[str, str]]) -> tuple[list[list[str]], collections.Counter]:
    families: dict[str, list[str]] = collections.defaultdict(list)
    for alias in tiers:
        families[family_of(alias)].append(alias)
    merged: dict[str, list[str]] = collections.defaultdict(list)
    for name, members in families.items():
        if name.count("-") == 2 and len(members) < SMALL_LIB:
            name = name.split("-")[0] + "-*"
        merged[name].extend(members)
    for name in [n for n, members in merged.items() if len(members) < SMALL_FAMILY]:
        merged["other"].extend(merged.pop(name))
    rows, totals = [], collections.Counter()
    for name in sorted(merged, key=lambda n: (n == "other", -len(merged[n]), n)):
        members = merged[name]
        counts = collections.Counter(tiers[a][0] for a in members)
        totals.update(counts)
        totals["entries"] += len(members)
        how = []
        for tier in (NATIVE, CK_SCRIPT, REFUSED):
            reasons = collections.Counter(reason_kind(tiers[a][1]) for a in members if tiers[a][0] == tier)
            for reason, count in reasons.most_common(3):
                how.append(f"{tier}: {reason} ({count})")
            if len(reasons) > 3:
                how.append(f"{tier}: {sum(c for _, c in reasons.most_common()[3:])} more")
        rows.append([f"`{name}`", str(len(members)), str(counts[NATIVE]), str(counts[CK_SCRIPT]), str(counts[REFUSED]),
                     "; ".join(how).replace("|", "\\|")])
    return rows, totals


def render(tiers: dict[str, tuple[str, str]], repo_dir: Path) -> str:
    rows, totals = build_table(tiers)
    lines = [HEADER,
             f"Generated by `scripts/ck_compat_table.py` from `{repo_dir.name}` ({len(tiers)} package entries, each with "
             "its default variation). Columns: entries, how many install natively, with CK scripts, or are refused, "
             "and why (the commonest reasons, with counts).", "",
             "| family | entries | native | ck-script | refused | how |",
             "|---|---:|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append(f"| **all** | {totals['entries']} | {totals[NATIVE]} | {totals[CK_SCRIPT]} | {totals[REFUSED]} | |")
    lines += ["", GUIDE_HEADING, "",
              "The CK guide's command lines and what ckx does with each are tabulated here.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(os.environ.get("CKX_CK_MLOPS_REPO") or DEFAULT_REPO),
                        help="the CK repo to read (default: ../shared/ck-mlops/repo)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the Markdown file to write")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = parser.parse_args(argv)
    if not (args.repo / "package").is_dir():
        print(f"error: {args.repo} has no package/ directory (is it a CK repo?)", file=sys.stderr)
        return 2
    text = render(classify_repo(args.repo), args.repo)
    if args.output.is_file():
        existing = args.output.read_text(encoding="utf-8")
        if GUIDE_HEADING in existing:  # the guide-lines section belongs to its own generator: keep it
            text = text[: text.index(GUIDE_HEADING)] + existing[existing.index(GUIDE_HEADING):]
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: run scripts/ck_compat_table.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(tiers_or_empty(text))} families)")
    return 0


def tiers_or_empty(text: str) -> list[str]:
    """The family rows of a generated table (for the summary line)."""
    return [line for line in text.splitlines() if line.startswith("| `")]


if __name__ == "__main__":
    sys.exit(main())
