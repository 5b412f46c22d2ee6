"""access(dict) -> dict, and the explicit table of actions behind the CLI, the Python API and the web API."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ckx.core.cid import Cid, has_wildcard
from ckx.core.report import Reporter
from ckx.store.context import Context
from ckx.core.errors import CkxError, Interrupted, UsageError


@dataclass(frozen=True)
class Action:
    """One verb. ``module`` None means it applies to every module (a generic action).

    ``target`` is "package.module:function", imported only when the action runs, so start-up stays light.
    ``long`` actions become jobs in the web service; ``read_only`` ones may be called with GET.
    """

    name: str
    module: str | None
    target: str
    summary: str
    usage: str
    long: bool = False
    read_only: bool = False

    def handler(self) -> Callable[[Context, dict], dict]:
        module_name, function = self.target.split(":")
        return getattr(importlib.import_module(module_name), function)


ACTIONS: tuple[Action, ...] = (
    # generic actions, on every module
    Action("add", None, "ckx.store.generic:add", "create an entry", "ckx add MODULE[:ALIAS] [--tags=a,b] [@meta.json] [--repo=NAME]"),
    Action("load", None, "ckx.store.generic:load", "print an entry's meta", "ckx load MODULE:ENTRY [--merged]", read_only=True),
    Action("find", None, "ckx.store.generic:find", "print where entries are", "ckx find MODULE[:ENTRY] [--tags=...]", read_only=True),
    Action("search", None, "ckx.store.generic:search", "search entries by tags, strings or a sub-dict",
           "ckx search [MODULE] [--tags=a,-b] [--search_string='*x*'] [--search_dict=JSON|@file]", read_only=True),
    Action("list", None, "ckx.store.generic:list_entries", "list entries (wildcards allowed)", "ckx list [MODULE[:PATTERN]] [--tags=...]", read_only=True),
    Action("rm", None, "ckx.store.generic:rm", "delete entries", "ckx rm MODULE:ENTRY|PATTERN [--tags=...] [--force]"),
    Action("ren", None, "ckx.store.generic:ren", "rename an entry or move it to another repo", "ckx ren MODULE:OLD NEW | REPO:MODULE:NEW"),
    Action("cp", None, "ckx.store.generic:cp", "copy an entry under a new uid", "ckx cp MODULE:SRC NEW | REPO:MODULE:NEW"),
    Action("list_tags", None, "ckx.store.generic:list_tags", "list tags with counts", "ckx list_tags [MODULE] [--tags=...]", read_only=True),
    Action("path", None, "ckx.store.generic:path", "print the directory of an entry, module or repo", "ckx path MODULE[:ENTRY] | repo:NAME", read_only=True),
    Action("zip", None, "ckx.sharing.zip:action_zip", "archive entries or a whole repo", "ckx zip CID [--archive_name=F] [--auto_name] | ckx zip repo:NAME"),
    # repos
    Action("add", "repo", "ckx.store.repo_actions:add_repo", "register a repo (created if missing)", "ckx add repo:NAME [--path=DIR] [--url=URL] [--quiet]"),
    Action("list", "repo", "ckx.store.repo_actions:list_repos", "list registered repos", "ckx list repo", read_only=True),
    Action("rm", "repo", "ckx.store.repo_actions:rm_repo", "unregister a repo (--all also deletes its files)", "ckx rm repo:NAME [--all] [--force]"),
    Action("pull", "repo", "ckx.sharing.pull:action_pull", "clone or update a repo with git", "ckx pull repo:ALIAS [--url=URL] [--branch=NAME]", long=True),
    Action("unzip", "repo", "ckx.sharing.unzip:action_unzip", "extract a zip of entries or of a repo", "ckx unzip repo[:NAME] --zip=FILE|URL [--overwrite]", long=True),
    # software
    Action("detect", "soft", "ckx.software.actions:action_detect_soft", "detect installed software and record envs",
           "ckx detect soft[:ALIAS] [--tags=...] [--full_path=P] [--search_dir=D] [--search_depth=N] [--force_version=V]"
           " [--extra_tags=...] [--python=PATH]"),
    Action("detect", "platform", "ckx.software.platform:action_detect_platform", "describe this machine and record it", "ckx detect platform [--refresh]"),
    Action("install", "package", "ckx.software.actions:action_install", "install a package and record its env",
           "ckx install package[:ALIAS] --tags=... [--variation=V] [--version=V] [--local_path=FILE] [--force] [--quiet]",
           long=True),
    Action("show", "env", "ckx.software.envs:action_show", "show recorded envs", "ckx show env [--tags=...]", read_only=True),
    Action("rm", "env", "ckx.software.envs:action_rm", "delete env records", "ckx rm env:UID | ckx rm env --tags=... [--force] [--all]"),
    Action("virtual", "env", "ckx.software.envs:action_virtual", "run a command or shell with envs applied", "ckx virtual env --tags=... [--tag_groups=...] [--cmd='PROG ARGS' | --shell_cmd='sh text' | -- PROG ARGS]"),
    Action("create", "venv", "ckx.software.venv:action_create", "create a Python virtual env with its own env records",
           "ckx create venv:NAME [--template=mlperf-inference] [--system_site_packages] [--with_pip|--without_pip]",
           long=True),
    Action("activate", "venv", "ckx.software.venv:action_activate", "print (or spawn) the activation of a venv", "ckx activate venv:NAME"),
    Action("rm", "venv", "ckx.software.venv:action_rm", "delete venvs", "ckx rm venv:NAME | venv:* [--force]"),
    Action("list", "venv", "ckx.software.venv:action_list", "list venvs", "ckx list venv", read_only=True),
    # programs and experiments
    Action("run", "program", "ckx.runs.program:action_run", "run a program's command key",
           "ckx run program:NAME --cmd_key=KEY [--env.VAR=V] [--dep_add_tags.DEP=tags] [--deps.DEP=ENV_UID] [--offline]"
           " [--print_files=a,b] [--timeout=S] [-- EXTRA ARGS]", long=True),
    Action("benchmark", "program", "ckx.runs.benchmark:action_benchmark", "run a program N times and record the results",
           "ckx benchmark program:NAME --cmd_key=KEY [--repetitions=N] [--record] [--record_uoa=NAME] [--record_repo=REPO]"
           " [--tags=...] [--print_files=a,b] [--skip_print_timers] [--skip_print_stats] [--env.VAR=V] [--timeout=S]",
           long=True),
    Action("show", "experiment", "ckx.runs.show:action_show", "a table of an experiment's points", "ckx show experiment:NAME", read_only=True),
    Action("replay", "experiment", "ckx.runs.replay:action_replay", "re-run a recorded point", "ckx replay experiment:NAME [--point=UID] [--repetitions=N] [--record]", long=True),
    Action("export", "experiment", "ckx.runs.export:action_export", "export points as CSV or JSON", "ckx export experiment:NAME --format=csv|json [--out=FILE]", read_only=True),
    Action("generate", "submission", "ckx.runs.submission_actions:action_generate",
           "build an MLPerf submission tree from runs (--run makes them first)",
           "ckx generate submission --out=DIR [--run [--short]] [--system_type=edge|datacenter|datacenter,edge]"
           " [--run_dirs=a,b | --experiment=NAME] [--system.FIELD=V | @system.json] [--measurements.FIELD=V]"
           " [--division=closed|open]"
           " [--program=NAME] [--offline] [--dep_add_tags.DEP=tags] [--env.VAR=V] [--force]", long=True),
    Action("check", "submission", "ckx.runs.submission_actions:action_check",
           "run the official MLPerf submission checker on a tree and show its verdict",
           "ckx check submission --dir=DIR [--version=v6.1]", long=True),
    Action("dashboard", None, "ckx.runs.dashboard:action_dashboard", "an HTML page of experiments",
           "ckx dashboard [experiment:NAME ...] [--tags=...] [--out=report.html] [--serve --port=N [--serve_for=S]]"),
    Action("serve", None, "ckx.web.server:action_serve", "serve the actions as a JSON web API", "ckx serve [--host=127.0.0.1] [--port=N] [--token=T]"),
    # about ckx itself
    Action("version", None, "ckx.api.about:version", "print the version", "ckx version", read_only=True),
    Action("help", None, "ckx.api.about:help_action", "list actions or describe one", "ckx help [ACTION]", read_only=True),
    Action("uid", None, "ckx.api.about:uid", "print a new uid", "ckx uid", read_only=True),
    Action("reindex", None, "ckx.api.about:reindex", "rebuild the search index", "ckx reindex"),
)

ACTION_ALIASES = {"ls": "list", "delete": "rm", "remove": "rm", "mv": "ren", "copy": "cp", "where": "path"}
# Actions whose module is implied when the user gives none.
DEFAULT_MODULE = {"pull": "repo", "unzip": "repo", "dashboard": None}
# Keys that CK's access() used for the same things.
CK_KEYS = {"module_uoa": "module", "data_uoa": "entry", "repo_uoa": "repo"}

_TABLE: dict[tuple[str, str | None], Action] = {(a.name, a.module): a for a in ACTIONS}


def lookup(action: str, module: str | None) -> Action:
    """The Action for ``action`` on ``module``: module-specific first, then generic. UsageError otherwise."""
    name = ACTION_ALIASES.get(action, action)
    specific = _TABLE.get((name, module)) if module and not has_wildcard(module) else None
    if specific is not None:
        return specific
    generic = _TABLE.get((name, None))
    if generic is not None:
        return generic
    modules = sorted(a.module for a in ACTIONS if a.name == name and a.module)
    if modules:
        raise UsageError(
            f"'{name}' works on {', '.join(modules)}, not on {module or 'nothing'}",
            hint=f"usage: {_TABLE[(name, modules[0])].usage}",
        )
    raise UsageError(f"unknown action {action!r}", hint="'ckx help' lists the actions")


def normalise(request: dict) -> dict:
    """Accept CK's keys (module_uoa, data_uoa, repo_uoa, cid) and fill module/entry/repo from a CID."""
    inp = dict(request)
    for ck_key, key in CK_KEYS.items():
        if ck_key in inp and key not in inp:
            inp[key] = inp.pop(ck_key)
    cid_text = inp.pop("cid", None)
    if cid_text:
        cid = Cid.parse(cid_text)
        inp.setdefault("module", cid.module)
        if cid.entry:
            inp.setdefault("entry", cid.entry)
        if cid.repo:
            inp.setdefault("repo", cid.repo)
        inp.setdefault("cids", [cid_text])
    for key in ("module", "entry", "repo"):
        value = inp.get(key)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"'{key}' must be a string")
        if isinstance(value, str) and ("/" in value or "\\" in value or value in (".", "..")):
            raise UsageError(f"invalid {key} {value!r}: path separators and '..' are not allowed")
    action = inp.get("action")
    if not action or not isinstance(action, str):
        raise UsageError("no action given", hint="'ckx help' lists the actions")
    if not inp.get("module") and action in DEFAULT_MODULE and DEFAULT_MODULE[action]:
        inp["module"] = DEFAULT_MODULE[action]
    return inp


def run(ctx: Context, request: dict) -> dict:
    """Dispatch one normalised request; raises CkxError subclasses."""
    inp = normalise(request)
    action = lookup(inp["action"], inp.get("module"))
    result = action.handler()(ctx, inp)
    if not isinstance(result, dict):
        result = {"return": 0, "result": result}
    result.setdefault("return", 0)
    return result


def access(request: dict, *, context: Context | None = None) -> dict:
    """The JSON-in/JSON-out facade: never raises for expected errors, returns ``{"return": code, ...}``."""
    if not isinstance(request, dict):
        return UsageError("access() takes a dict").to_dict()
    quiet = bool(request.get("quiet", True))
    ctx = context or Context(reporter=Reporter(), quiet=quiet, interactive=False)
    try:
        result = run(ctx, request)
    except CkxError as exc:
        result = exc.to_dict()
    except KeyboardInterrupt:
        result = Interrupted("interrupted").to_dict()
    finally:
        if context is None:
            ctx.close()
    if ctx.reporter.warnings:
        result["warnings"] = list(ctx.reporter.warnings)
    return result
