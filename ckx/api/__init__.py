"""access(dict) -> dict, and the explicit table of actions behind the CLI, the Python API and the web API."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable, Sequence

from ckx.core.cid import Cid, has_wildcard
from ckx.core.options import GLOBAL_OPTIONS, Option, describe, option_lines, parse
from ckx.core.report import Reporter
from ckx.store.context import Context
from ckx.core.errors import CkxError, Interrupted, UsageError


@dataclass(frozen=True)
class Action:
    """One verb. ``module`` None means it applies to every module (a generic action).

    ``target`` is "package.module:function", imported only when the action runs, so start-up stays light.
    ``long`` actions become jobs in the web service; ``read_only`` ones may be called with GET.
    ``options`` are the inputs it takes besides its CIDs; the global ones (``--json``, ``--quiet``, ...)
    come on top. The dispatcher types them (``parse``) before the handler runs. ``help_target``, when
    set, adds what the entry itself offers to ``--help`` (a program's command keys), as a
    "package.module:function" taking (ctx, inp) and returning a dict with a ``text``.
    """

    name: str
    module: str | None
    target: str
    summary: str
    usage: str
    long: bool = False
    read_only: bool = False
    options: tuple[Option, ...] = ()
    help_target: str | None = None

    @property
    def label(self) -> str:
        """``benchmark program``, or ``search`` for a generic action."""
        return f"{self.name} {self.module}" if self.module else self.name

    def handler(self) -> Callable[[Context, dict], dict]:
        module_name, function = self.target.split(":")
        return getattr(importlib.import_module(module_name), function)

    def parse(self, inp: dict) -> dict:
        """``inp`` with this action's options typed and defaulted; UsageError for unknown or ill-typed ones."""
        return parse(self.options, inp, where=self.label)


# -- options several actions share ----------------------------------------------------------------
TAGS = Option("tags", "list", help="entries with all of these tags; -tag excludes")
FORCE = Option("force", "bool", help="do not ask before deleting", aliases=("f",))
TIMEOUT = Option("timeout", "seconds", help="stop the command after this many seconds")
OFFLINE = Option("offline", "bool", help="never use the network (also CKX_OFFLINE=1)")
PRINT_FILES = Option("print_files", "list", help="print these files of the run directory after the run")
RUN_OPTIONS = (
    Option("cmd_key", help="the program's command key to run"),
    Option("env", "map", help="set a variable for the run; a bare --env.VAR sets it to 'yes'"),
    Option("dep_add_tags", "map", help="narrow dependency NAME by these tags (--dep_add_tags.NAME=a,b)"),
    Option("deps", "map", help="use this env uid for dependency NAME (--deps.NAME=UID)"),
    OFFLINE, PRINT_FILES, TIMEOUT,
)
NEW_NAME = (Option("new_alias", help="the new alias (same as the second CID)"),
            Option("new_repo", help="the repo to move or copy into"))
# ``run program[:NAME] --help`` also describes the program (or lists the programs).
PROGRAM_HELP = "ckx.runs.program_help:program_help"
MACHINE = Option("machine", help="only points of machines this names: part of the host name or CPU, or a fingerprint prefix")
PORT = Option("port", "int", help="the port to listen on (0: any free one)", minimum=0, maximum=65535)

ACTIONS: tuple[Action, ...] = (
    # generic actions, on every module
    Action("add", None, "ckx.store.generic:add", "create an entry", "ckx add MODULE[:ALIAS] [--tags=a,b] [@meta.json] [--repo=NAME]",
           options=(Option("tags", "list", help="tags of the new entry"),
                    Option("meta", "dict", help="the entry's meta (usually from @meta.json)"),
                    Option("dict", "dict", help="CK's name for --meta"),
                    Option("uid", help="the uid to give the entry (16 hex digits; default: a new one)"),
                    Option("new_module", "bool", help="allow a module ckx does not know yet"))),
    Action("load", None, "ckx.store.generic:load", "print an entry's meta", "ckx load MODULE:ENTRY [--merged]", read_only=True,
           options=(Option("merged", "bool", help="merge the meta of the base entries under it"),)),
    Action("find", None, "ckx.store.generic:find", "print where entries are", "ckx find MODULE[:ENTRY] [--tags=...]", read_only=True,
           options=(TAGS,)),
    Action("search", None, "ckx.store.generic:search", "search entries by tags, strings or a sub-dict",
           "ckx search [MODULE] [--tags=a,-b] [--search_string='*x*'] [--search_dict=JSON|@file]", read_only=True,
           options=(TAGS, Option("search_string", help="a wildcard pattern one of the meta's string values matches"),
                    Option("search_dict", "dict", help="a sub-dict the meta must contain"))),
    Action("search", "package", "ckx.software.actions:action_search_package",
           "search packages; --installable keeps those ckx installs and names the tier",
           "ckx search package [--tags=a,-b] [--search_string='*x*'] [--search_dict=JSON|@file] [--installable]", read_only=True,
           options=(TAGS, Option("search_string", help="a wildcard pattern one of the meta's string values matches"),
                    Option("search_dict", "dict", help="a sub-dict the meta must contain"),
                    Option("installable", "bool", help="only packages ckx can install, with the tier (native, ck-script)"))),
    Action("list", None, "ckx.store.generic:list_entries", "list entries (wildcards allowed)", "ckx list [MODULE[:PATTERN]] [--tags=...]",
           read_only=True, options=(TAGS,)),
    Action("rm", None, "ckx.store.generic:rm", "delete entries", "ckx rm MODULE:ENTRY|PATTERN [--tags=...] [--force]",
           options=(TAGS, FORCE)),
    Action("ren", None, "ckx.store.generic:ren", "rename an entry or move it to another repo", "ckx ren MODULE:OLD NEW | REPO:MODULE:NEW",
           options=NEW_NAME),
    Action("cp", None, "ckx.store.generic:cp", "copy an entry under a new uid", "ckx cp MODULE:SRC NEW | REPO:MODULE:NEW",
           options=NEW_NAME),
    Action("list_tags", None, "ckx.store.generic:list_tags", "list tags with counts", "ckx list_tags [MODULE] [--tags=...]", read_only=True,
           options=(TAGS,)),
    Action("path", None, "ckx.store.generic:path", "print the directory of an entry, module or repo", "ckx path MODULE[:ENTRY] | repo:NAME",
           read_only=True),
    Action("zip", None, "ckx.sharing.zip:action_zip", "archive entries or a whole repo",
           "ckx zip CID [--archive_name=F] [--auto_name] [--overwrite] | ckx zip repo:NAME [--overwrite]",
           options=(TAGS, Option("archive_name", "path", help="the archive to write (default ckr.zip; ckr-NAME.zip for repo:NAME)"),
                    Option("auto_name", "bool", help="name the archive ckr-REPO-MODULE-TIME.zip"),
                    Option("overwrite", "bool", help="replace the archive if the file exists (default: refuse)"))),
    # repos
    Action("add", "repo", "ckx.store.repo_actions:add_repo", "register a repo (created if missing)", "ckx add repo:NAME [--path=DIR] [--url=URL] [--quiet]",
           options=(Option("path", "path", help="an existing repo directory, read in place (default: a new one in $CKX_HOME/repos)"),
                    Option("url", help="where the repo comes from"))),
    Action("list", "repo", "ckx.store.repo_actions:list_repos", "list registered repos", "ckx list repo", read_only=True),
    Action("rm", "repo", "ckx.store.repo_actions:rm_repo", "unregister a repo (--all also deletes its files)", "ckx rm repo:NAME [--all] [--force]",
           options=(Option("all", "bool", help="also delete the repo's files"), FORCE)),
    Action("pull", "repo", "ckx.sharing.pull:action_pull", "clone or update a repo with git", "ckx pull repo:ALIAS [--url=URL] [--branch=NAME] [--offline]", long=True,
           options=(Option("url", help="the git URL (default: the catalog's URL for the alias)"),
                    Option("branch", help="the branch to check out"),
                    Option("no_deps", "bool", help="do not pull the repos it depends on"),
                    Option("timeout", "seconds", help="seconds one git command may take (default 900)"),
                    Option("offline", "bool", help="contact no host: only file:// and path URLs are pulled (also CKX_OFFLINE=1)"))),
    Action("push", "repo", "ckx.sharing.push:action_push", "commit a repo's new points, merge the remote's, push",
           "ckx push repo:NAME [--message=TEXT]", long=True,
           options=(Option("message", help="the commit message (default: how many files, from which host)"),
                    Option("timeout", "seconds", help="seconds one git command may take (default 900)"))),
    Action("unzip", "repo", "ckx.sharing.unzip:action_unzip", "extract a zip of entries or of a repo",
           "ckx unzip repo[:NAME] [--zip=FILE|URL] [--overwrite] [--allow_code] [--offline]", long=True,
           options=(Option("zip", help="the archive: a file or an http(s) URL (default ./ckr.zip)", aliases=("archive", "file")),
                    Option("overwrite", "bool", help="replace entries that are already there"),
                    Option("allow_code", "bool", help="let entries that carry code (packages, softs, programs, "
                                                      "scripts, command lines) into an existing repo"),
                    OFFLINE)),
    # software
    Action("detect", "soft", "ckx.software.actions:action_detect_soft", "detect installed software and record envs",
           "ckx detect soft[:ALIAS] [--tags=...] [--full_path=P] [--search_dir=D] [--search_depth=N] [--force_version=V]"
           " [--extra_tags=...] [--python=PATH]",
           options=(Option("tags", "list", help="detect the softs with all of these tags"),
                    Option("full_path", "path", help="record this file instead of searching"),
                    Option("search_dir", "list", help="directories to search (comma or : separated)", aliases=("search_dirs",),
                           separators="," + os.pathsep),
                    Option("search_depth", "int", help="how deep to search under each directory", minimum=0),
                    Option("force_version", help="record this version instead of detecting it"),
                    Option("extra_tags", "list", help="more tags for the recorded envs"),
                    Option("python", "path", help="the interpreter whose modules are looked in"),
                    Option("deps", "map", help="use this env uid for dependency NAME (--deps.NAME=UID)"))),
    Action("detect", "platform", "ckx.software.platform:action_detect_platform", "describe this machine and record it",
           "ckx detect platform [--refresh]   (CK's 'detect platform.os' is the same)",
           options=(Option("refresh", "bool", help="describe the machine afresh (always done)"),
                    Option("platform_init_uoa", help="CK's platform description to start from; ckx describes the "
                                                     "machine itself, so it is accepted and not needed"))),
    Action("setup", "kernel", "ckx.api.about:setup_kernel", "CK's kernel settings: accepted, and said what ckx does instead",
           "ckx setup kernel [--var.install_to_env=yes]", read_only=True,
           options=(Option("var", "map", help="CK kernel variables (install_to_env: ckx always records envs)"),)),
    Action("install", "package", "ckx.software.actions:action_install", "install a package and record its env",
           "ckx install package[:ALIAS] --tags=... [--variation=V] [--version=V] [--local_path=FILE] [--force] [--quiet]",
           long=True,
           options=(Option("tags", "list", help="install a package with all of these tags"),
                    Option("variation", help="the package variation (default: its default one)"),
                    Option("version", help="the version to install"),
                    Option("local_path", "path", help="install from this file on disk (checksum still checked)"),
                    OFFLINE, Option("force", "bool", help="install again even if an env is recorded"))),
    Action("show", "env", "ckx.software.envs:action_show", "show recorded envs", "ckx show env [env:UID ...] [--tags=...]", read_only=True,
           options=(TAGS,)),
    Action("rm", "env", "ckx.software.envs:action_rm", "delete env records", "ckx rm env:UID | ckx rm env --tags=... [--force] [--all]",
           options=(TAGS, FORCE, Option("all", "bool", help="also delete their install directories under $CKX_TOOLS"))),
    Action("virtual", "env", "ckx.software.envs:action_virtual", "run a command or shell with envs applied",
           "ckx virtual env --tags=... [--tag_groups=...] [--cmd='PROG ARGS' | --shell_cmd='sh text' | -- PROG ARGS]",
           options=(TAGS, Option("tag_groups", help="space-separated tag lists, one env each ('a,b c,d')"),
                    Option("cmd", help="the command to run, split like a shell would (no shell)"),
                    Option("shell_cmd", help="shell text to run with /bin/sh -c"), TIMEOUT)),
    Action("create", "venv", "ckx.software.venv:action_create", "create a Python virtual env with its own env records",
           "ckx create venv:NAME [--template=mlperf-inference|mlperf-inference-1.1-tvm] [--system_site_packages] [--with_pip|--without_pip]",
           long=True,
           options=(Option("name", help="the venv's name (same as venv:NAME)"),
                    Option("template", help="install a template's packages into it (mlperf-inference, mlperf-inference-1.1-tvm)"),
                    Option("system_site_packages", "bool", help="let it see the base interpreter's packages",
                           aliases=("system-site-packages",)),
                    Option("with_pip", "bool", help="install pip into it", aliases=("with-pip",)),
                    Option("without_pip", "bool", help="do not install pip into it", aliases=("without-pip",)),
                    Option("python", "path", help="the interpreter to create it with"))),
    Action("activate", "venv", "ckx.software.venv:action_activate", "print (or spawn) the activation of a venv", "ckx activate venv:NAME [--print]",
           options=(Option("name", help="the venv's name (same as venv:NAME)"),
                    Option("print", "bool", help="print the shell snippet instead of starting a shell"))),
    Action("rm", "venv", "ckx.software.venv:action_rm", "delete venvs", "ckx rm venv:NAME | venv:* [--force]",
           options=(Option("name", help="the venv's name (same as venv:NAME)"), FORCE)),
    Action("list", "venv", "ckx.software.venv:action_list", "list venvs", "ckx list venv", read_only=True),
    # programs and experiments
    Action("run", "program", "ckx.runs.program:action_run", "run a program's command key",
           "ckx run program:NAME --cmd_key=KEY [--env.VAR=V] [--dep_add_tags.DEP=tags] [--deps.DEP=ENV_UID] [--offline]"
           " [--print_files=a,b] [--timeout=S] [-- EXTRA ARGS]", long=True,
           options=RUN_OPTIONS, help_target=PROGRAM_HELP),
    Action("benchmark", "program", "ckx.runs.sweep_run:action_benchmark", "run a program N times and record the results",
           "ckx benchmark program:NAME --cmd_key=KEY [--repetitions=N] [--record] [--record_uoa=NAME] [--record_repo=REPO]"
           " [--tags=...] [--print_files=a,b] [--skip_print_timers] [--skip_print_stats] [--env.VAR=V] [--timeout=S]"
           " [--sweep.env.VAR=A,B --sweep.cmd_key=K1,K2 | @sweep.yaml] [--plan] [--force] [--max_failures=N]"
           " [--executor=local|ray [--ray_address=ADDR]]",
           long=True,
           options=(*RUN_OPTIONS,
                    Option("repetitions", "int", 1, help="how many times to run", minimum=1),
                    Option("record", "bool", help="record the repetitions in an experiment"),
                    Option("record_uoa", help="the experiment to record into (default: the program's name)"),
                    Option("record_repo", help="the repo of that experiment (default: local)"),
                    Option("tags", "list", help="tags of the recorded point"),
                    Option("sweep", "dict", help="run every combination: --sweep.cmd_key=A,B --sweep.env.VAR=1,2 "
                                                 "(also dep_add_tags.DEP, deps.DEP; sweep.exclude in @sweep.yaml)"),
                    Option("plan", "bool", help="with --sweep: list the combinations, what is recorded and the "
                                                "expected time; run nothing"),
                    Option("force", "bool", help="with --sweep: run combinations that are recorded already too"),
                    Option("max_failures", "int", help="with --sweep: stop after this many failed combinations",
                           minimum=1),
                    Option("executor", "str", "local", help="with --sweep: where combinations run",
                           choices=("local", "ray")),
                    Option("ray_address", help="with --executor=ray: the cluster to use (default: start a local "
                                               "Ray instance)")),
           help_target=PROGRAM_HELP),
    Action("show", "experiment", "ckx.runs.show:action_show", "a table of an experiment's points",
           "ckx show experiment:NAME [--machine=TEXT] [--group_by=machine]",
           read_only=True, options=(TAGS, MACHINE,
                                    Option("group_by", help="one table per machine", choices=("machine",)))),
    Action("replay", "experiment", "ckx.runs.replay:action_replay", "re-run a recorded point",
           "ckx replay experiment:NAME [--point=UID] [--repetitions=N] [--record]", long=True,
           options=(Option("point", help="the point to replay (needed when there are several)"),
                    Option("repetitions", "int", 1, help="how many times to run", minimum=1),
                    Option("record", "bool", help="record the repetitions in the same point"),
                    PRINT_FILES, TIMEOUT)),
    Action("export", "experiment", "ckx.runs.export:action_export", "export points as CSV or JSON",
           "ckx export experiment:NAME --format=csv|json [--out=FILE] [--machine=TEXT]", read_only=True,
           options=(Option("format", "str", "csv", help="the output format", choices=("csv", "json")),
                    Option("out", "path", help="write to this file instead of printing"), TAGS, MACHINE)),
    Action("generate", "submission", "ckx.runs.submission_actions:action_generate",
           "build an MLPerf submission tree from runs (--run makes them first)",
           "ckx generate submission --out=DIR [--run [--short]] [--system_type=edge|datacenter|datacenter,edge]"
           " [--run_dirs=a,b | --experiment=NAME] [--system.FIELD=V | @system.json] [--measurements.FIELD=V]"
           " [--division=closed|open] [--program=NAME] [--offline] [--dep_add_tags.DEP=tags] [--env.VAR=V] [--force]",
           long=True,
           options=(Option("out", "path", help="the directory of the submission tree"),
                    Option("run", "bool", help="first run every run the tree needs"),
                    Option("short", "bool", help="with --run: short runs (not valid for a submission)"),
                    Option("compliance_retries", "int", 2, minimum=0,
                           help="with --run: run an audit run again when its performance check fails on "
                                "two LoadGen-VALID runs (machine noise), up to this many times"),
                    Option("system_type", "str", "edge", help="which scenarios the tree holds",
                           choices=("edge", "datacenter", "datacenter,edge")),
                    Option("scenarios", "list", help="only these scenarios (default: those of the system type)"),
                    Option("run_dirs", "list", help="export these run directories"),
                    Option("experiment", "list", help="export the runs these experiments recorded"),
                    Option("system", "dict", help="fields of the system description (--system.FIELD=V or @system.json)"),
                    Option("measurements", "dict", help="fields of measurements.json (--measurements.FIELD=V)"),
                    Option("submitter", help="the submitting organisation (the system's 'submitter' field)"),
                    Option("status", help="the system's availability status (available, preview, rdi)"),
                    Option("division", "str", "closed", help="the MLPerf division", choices=("closed", "open")),
                    Option("program", help="the program whose runs to use or make"),
                    OFFLINE,
                    Option("env", "map", help="with --run: set a variable for the runs"),
                    Option("dep_add_tags", "map", help="with --run: narrow dependency NAME by these tags"),
                    Option("force", "bool", help="replace an existing tree at --out"))),
    Action("check", "submission", "ckx.runs.submission_actions:action_check",
           "run the official MLPerf submission checker on a tree and show its verdict",
           "ckx check submission --dir=DIR [--version=v6.1]", long=True,
           options=(Option("dir", "path", help="the submission tree to check"),
                    Option("out", "path", help="the same as --dir"),
                    Option("version", help="the checker's rules version (default v6.1)"))),
    Action("dashboard", None, "ckx.runs.dashboard:action_dashboard", "an HTML page of experiments",
           "ckx dashboard [experiment:NAME ...] [--tags=...] [--out=report.html] [--serve --port=N [--serve_for=S]]",
           options=(TAGS, Option("out", "path", help="the page to write (default dashboard.html)"),
                    Option("title", help="the page's title"),
                    Option("serve", "bool", help="serve the page on 127.0.0.1 until Ctrl-C"), PORT,
                    Option("serve_for", "int", help="stop serving after this many seconds", minimum=1))),
    Action("serve", None, "ckx.web.server:action_serve", "serve the actions as a JSON web API",
           "ckx serve [--host=127.0.0.1] [--port=N] [--token=T] [--allow_writes] [--workers=N]",
           options=(Option("host", "str", "127.0.0.1", help="the address to listen on"),
                    Option("port", "int", 3344, help="the port to listen on (0: any free one)", minimum=0, maximum=65535),
                    Option("token", help="the token clients must send (also CKX_SERVE_TOKEN; default: a random one,"
                                         " written to $CKX_HOME/serve-token)"),
                    Option("allow_writes", "bool", help="also run the actions that run code or change files"),
                    Option("workers", "int", help="request threads (default: limits.server_workers, 8)", minimum=1),
                    Option("max_body", "int", help="the largest request body in bytes (default: limits.request_max_bytes)",
                           minimum=1),
                    Option("refresh_interval", "float", 1.0, help="seconds between index freshness checks", minimum=0),
                    Option("job_workers", "int", help="how many long actions run at once", minimum=1))),
    # about ckx itself
    Action("version", None, "ckx.api.about:version", "print the version", "ckx version", read_only=True),
    Action("help", None, "ckx.api.about:help_action", "list actions or describe one", "ckx help [ACTION]", read_only=True,
           options=(Option("topic", help="the action to describe (same as ckx help ACTION)"),)),
    Action("uid", None, "ckx.api.about:uid", "print a new uid", "ckx uid", read_only=True),
    Action("reindex", None, "ckx.api.about:reindex", "rebuild the search index", "ckx reindex"),
)

ACTION_ALIASES = {"ls": "list", "delete": "rm", "remove": "rm", "mv": "ren", "copy": "cp", "where": "path"}
# Actions whose module is implied when the user gives none.
DEFAULT_MODULE = {"pull": "repo", "push": "repo", "unzip": "repo", "dashboard": None}
# CK's names of modules that ckx folds into one of its own, per action: ``detect platform.os`` is ``detect platform``.
MODULE_ALIASES = {("detect", "platform.os"): "platform"}
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
    for key in ("action", "module", "entry", "repo", "cid"):
        if inp.get(key) is not None and not isinstance(inp[key], str):
            raise UsageError(f"{key!r} must be a string, not {type(inp[key]).__name__}")
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
    alias = MODULE_ALIASES.get((ACTION_ALIASES.get(action, action), inp.get("module")))
    if alias:
        inp["module"] = alias
    return inp


def describe_actions(actions: Sequence[Action]) -> dict:
    """The usage, summary and declared options of ``actions`` (one name, on one or several modules)."""
    blocks = []
    for action in actions:
        lines = [action.usage, f"    {action.summary}"]
        if action.options:
            lines += ["  options:", *option_lines(action.options, indent="    ")]
        blocks.append("\n".join(lines))
    own = {o.name for a in actions for o in a.options}
    globals_text = " ".join(o.flag for o in GLOBAL_OPTIONS if o.name not in own)
    blocks.append(f"options every action takes: {globals_text}")
    return {"return": 0, "action": actions[0].name, "usages": [a.usage for a in actions],
            "actions": [{"name": a.name, "module": a.module, "usage": a.usage, "summary": a.summary,
                         "options": describe(a.options)} for a in actions],
            "global_options": describe(GLOBAL_OPTIONS), "text": "\n\n".join(blocks)}


def wants_help(inp: dict) -> bool:
    """``ckx ACTION MODULE --help`` (or ``-h``): describe the action instead of running it."""
    return inp.get("action") != "help" and any(inp.get(key) is True for key in ("help", "h"))


def run(ctx: Context, request: dict) -> dict:
    """Dispatch one request: normalise it, type its options once, run the handler; raises CkxError subclasses."""
    inp = normalise(request)
    action = lookup(inp["action"], inp.get("module"))
    if wants_help(inp):
        described = describe_actions([action])
        if action.help_target:
            module_name, function = action.help_target.split(":")
            extra = getattr(importlib.import_module(module_name), function)(ctx, inp)
            described.update({k: v for k, v in extra.items() if k != "text"})
            described["text"] = extra["text"] + "\n\n" + described["text"]
        return described
    result = action.handler()(ctx, action.parse(inp))
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
