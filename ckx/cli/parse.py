"""CK's command grammar: ``ACTION [CID ...] [--key=value] [--flag] [@input.json|@input.yaml] [-- rest]``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ckx.core.cid import Cid
from ckx.core.errors import MetaError, UsageError
from ckx.core.inputs import deep_update, set_dotted
from ckx.core.jsonio import read_meta_file


def read_input_file(text: str) -> dict:
    """The dict in ``@file.json`` or ``@file.yaml``; errors name the file."""

    path = Path(text[1:]).expanduser()
    if not path.is_file():
        raise UsageError(f"input file {path} does not exist")
    try:
        return read_meta_file(path)
    except MetaError as exc:
        raise UsageError(str(exc)) from None


def parse_argv(argv: Sequence[str]) -> dict:
    """Turn a CK-style command line into an input dict.

    The first word is the action; words that are neither options nor ``@files`` are CIDs (the first fills
    module/entry/repo, all of them are kept in ``cids``); ``--key=value`` sets a string, ``--flag`` sets True,
    dotted keys nest; ``@file`` merges a JSON/YAML dict (for ``add``, a file without "meta"/"dict" keys is the
    meta itself); everything after ``--`` goes to ``rest`` unchanged.
    """
    args = list(argv)
    if not args:
        return {"action": "help"}
    inp: dict[str, Any] = {}
    cids: list[str] = []
    at_files: list[dict] = []
    options: dict[str, Any] = {}
    action = args[0]
    if action.startswith("-") and action not in ("--help", "-h", "--version"):
        raise UsageError(f"expected an action first, got {action!r}", hint="usage: ckx ACTION [CID ...] [--key=value]")
    if action in ("--help", "-h"):
        action = "help"
    elif action == "--version":
        action = "version"
    index = 1
    while index < len(args):
        word = args[index]
        index += 1
        if word == "--":
            inp["rest"] = args[index:]
            break
        if word.startswith("--") and len(word) > 2:
            body = word[2:]
            key, eq, value = body.partition("=")
            set_dotted(options, key, value if eq else True)
        elif word.startswith("-") and len(word) > 1 and not word[1].isdigit():
            # CK accepted single-dash long flags too (-f, -quiet)
            body = word[1:]
            key, eq, value = body.partition("=")
            set_dotted(options, key, value if eq else True)
        elif word.startswith("@") and len(word) > 1:
            at_files.append(read_input_file(word))
        else:
            cids.append(word)
    for data in at_files:
        if action == "add" and "meta" not in data and "dict" not in data:
            data = {"meta": data}
        deep_update(inp, data)
    deep_update(inp, options)
    inp["action"] = action
    if cids:
        inp["cids"] = cids
        if action not in ("help",):
            first = Cid.parse(cids[0])
            inp.setdefault("module", first.module)
            if first.entry:
                inp.setdefault("entry", first.entry)
            if first.repo:
                inp.setdefault("repo", first.repo)
    return inp
