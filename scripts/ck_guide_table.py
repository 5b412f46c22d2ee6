#!/usr/bin/env python3
"""Run the CK guide lines against a throwaway home and write the "Guide lines" section of docs/ck-compatibility.md.

Each line of CK's MLPerf guides that ckx answers is run here with ``python -m ckx`` (this checkout), in
a fresh ``CKX_HOME`` and a fresh working directory, one after the other as a user would type them; the
table records the line, what was run when it differs (no network here: the pulls run offline; the venv
is built on this interpreter's packages so that pip fetches nothing), the exit status and the line of
output that says what ckx did.

    python scripts/ck_guide_table.py            # rewrite the "Guide lines" section of docs/ck-compatibility.md
    python scripts/ck_guide_table.py --check    # exit 1 when the file differs from a fresh run
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "ck-compatibility.md"
GUIDE_HEADING = "## Guide lines"  # this script owns the section from this heading to the end of OUTPUT
TIMEOUT_S = 900


@dataclass(frozen=True)
class Line:
    """One guide line: as CK's guide writes it, the ckx arguments run for it, and how to read its output."""

    guide: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    pick: str | None = None  # a regex: the output line to report (default: the first line)
    as_typed: bool = True  # False: the arguments run differ from the guide's (the table shows them)


def lines(workdir: Path, gcc: str) -> list[Line]:
    venv = "mlperf-inference"
    return [
        Line("ck pull repo:mlcommons@ck-venv", ("pull", "repo:mlcommons@ck-venv"), {"CKX_OFFLINE": "1"},
             "no network here", pick=r"^(error|hint): ", as_typed=False),
        Line("ck create venv:mlperf-inference --template=mlperf-inference-1.1-tvm",
             ("create", f"venv:{venv}", "--template=mlperf-inference-1.1-tvm", "--system_site_packages"),
             {"CKX_PIP_ARGS": "--no-index"}, "the template's packages come from this interpreter",
             pick=r"^created venv ", as_typed=False),
        Line("ck activate venv:mlperf-inference", ("activate", f"venv:{venv}"), {},
             "no terminal: the activation is printed", pick=r"CK_VENV_PYTHON_BIN"),
        Line("ck setup kernel --var.install_to_env=yes", ("setup", "kernel", "--var.install_to_env=yes")),
        Line("ck detect platform.os --platform_init_uoa=generic-linux-dummy",
             ("detect", "platform.os", "--platform_init_uoa=generic-linux-dummy"), pick=r"platform_init_uoa"),
        Line("ck detect soft:compiler.python --full_path=${CK_VENV_PYTHON_BIN}",
             ("detect", "soft:compiler.python", "--full_path={venv_python}"), {},
             "with CK_VENV_PYTHON_BIN as the activation exports it"),
        Line("ck detect soft:compiler.gcc --full_path=`which gcc`",
             ("detect", "soft:compiler.gcc", f"--full_path={gcc}") if gcc else ("detect", "soft:compiler.gcc"),
             {}, "" if gcc else "no gcc on this machine: searched on PATH", as_typed=bool(gcc)),
        Line("ck detect soft:tool.cmake --quiet", ("detect", "soft:tool.cmake", "--quiet")),
        Line("ck detect soft --tags=tool,cmake", ("detect", "soft", "--tags=tool,cmake")),
        Line("ck detect soft --tags=tool,git", ("detect", "soft", "--tags=tool,git")),
        Line("ck add repo:my-results --quiet", ("add", "repo:my-results", "--quiet")),
        Line("ck add experiment:resnet --repo=my-results", ("add", "experiment:resnet", "--repo=my-results")),
        Line("ck zip experiment:resnet", ("zip", "experiment:resnet")),
        Line("ck zip repo:my-results", ("zip", "repo:my-results")),
        Line("ck zip repo:my-results", ("zip", "repo:my-results"), note="a second time", pick=r"^error: "),
        Line("ck unzip repo", ("unzip", "repo")),
        Line("ck run program --help", ("run", "program", "--help"), pick=r"^programs \("),
        Line("ck run program:mlperf-inference-bench-image-classification-onnx-cpu --help",
             ("run", "program:mlperf-inference-bench-image-classification-onnx-cpu", "--help"), pick=r"^command keys"),
        Line("ck pull repo:mlcommons@ck-mlops", ("pull", "repo:mlcommons@ck-mlops"), {"CKX_OFFLINE": "1"},
             "no network here", pick=r"^error: ", as_typed=False),
    ]


def run_line(line: Line, *, home: Path, workdir: Path, values: dict[str, str]) -> tuple[int, str, str]:
    """(exit status, the command as run, the reported output line)."""
    args = [arg.format(**values) for arg in line.args]
    env = {k: v for k, v in os.environ.items() if k not in ("CKX_OFFLINE", "CKX_URL_MAP", "CKX_PIP_ARGS")}
    env.update(CKX_HOME=str(home), PYTHONPATH=str(ROOT), CKX_QUIET="1", **line.env)
    proc = subprocess.run([sys.executable, "-m", "ckx", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    output = [l for l in (proc.stdout + "\n" + proc.stderr).splitlines() if l.strip()]
    picked = next((l for l in output if line.pick and re.search(line.pick, l)), output[0] if output else "")
    shown = " ".join(f"{k}={v}" for k, v in line.env.items()) + (" " if line.env else "") + "ckx " + " ".join(args)
    return proc.returncode, shown, picked


def _cell(text: str, home: Path, workdir: Path, limit: int = 170) -> str:
    text = text.replace(str(workdir), "$PWD").replace(str(home), "$CKX_HOME").replace(sys.executable, "PYTHON")
    text = re.sub(r"\b[0-9a-f]{16}\b", "UID", text)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return _code(text) if text else ""


def _code(text: str) -> str:
    """``text`` as inline code in a table cell (double backticks when it holds one, as `which gcc` does)."""
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def build_table() -> str:
    """Run every line in a fresh home and working directory; the Markdown document."""
    gcc = shutil.which("gcc") or ""
    with tempfile.TemporaryDirectory(prefix="ckx-guide-") as tmp:
        home, workdir = Path(tmp) / "home", Path(tmp) / "work"
        workdir.mkdir()
        values = {"venv_python": str(home / "venvs" / "mlperf-inference" / "bin" / "python")}
        rows = []
        for line in lines(workdir, gcc):
            code, shown, picked = run_line(line, home=home, workdir=workdir, values=values)
            ran = "as typed" if line.as_typed else _cell(shown, home, workdir)
            if line.note:
                ran += f" ({line.note})"
            rows.append(f"| {_code(line.guide)} | {ran} | {code} | {_cell(picked, home, workdir)} |")
    header = [
        GUIDE_HEADING,
        "",
        "Each line that CK's MLPerf guides (mlcommons@ck-venv templates, ck-mlops READMEs) ask users to paste,",
        "run with ckx one after the other in a fresh `CKX_HOME` and working directory, and the line of output",
        "that says what ckx did. Generated by `python scripts/ck_guide_table.py` (`--check` compares);",
        "the machine it ran on has no network, so the pulls ran with `CKX_OFFLINE=1`.",
        "",
        "| guide line | as run | exit | what ckx says |",
        "|---|---|---|---|",
    ]
    return "\n".join(header + rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    parser.add_argument("--out", type=Path, default=OUTPUT, help=f"the file to write (default {OUTPUT})")
    options = parser.parse_args()
    existing = options.out.read_text(encoding="utf-8") if options.out.is_file() else ""
    before = existing[: existing.index(GUIDE_HEADING)] if GUIDE_HEADING in existing else existing
    text = before + build_table()
    if options.check:
        current = options.out.read_text(encoding="utf-8") if options.out.is_file() else ""
        if current != text:
            print(f"{options.out} differs from a fresh run", file=sys.stderr)
            return 1
        return 0
    options.out.write_text(text, encoding="utf-8")
    print(f"wrote {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
