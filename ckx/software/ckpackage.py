"""CK-format packages: which of them ckx installs, in which tier, and what they ask for.

A CK package (``package/<alias>/.cm/meta.json`` in a CK-format repo) installs by running a shell script
(``process_script`` + ``.sh``, from the entry itself or from ``use_scripts_from_another_entry``) with
``customize.install_env`` and the chosen variation's ``extra_env`` as its environment. ckx puts every such
package in one of three tiers (``install_tier``):

native
    The script only fetches or pip-installs, so ckx does the job itself and runs no shell script: the shared
    ``download-and-install-package`` script with ``PACKAGE_WGET``/``PACKAGE_GIT`` and its unpack switches but
    nothing to configure, make, patch or copy and no script of the package's own; a package script that only
    downloads ``DOWNLOAD_URL``/``DOWNLOAD_FILE``, checks ``DOWNLOAD_FILE_MD5`` and untars it; the shared
    Python-package script (``pip install ${PYTHON_PACKAGE_NAME}${PACKAGE_VERSION:+==...} ${PIP_INSTALL_OPTIONS}``).
ck-script
    Everything else that has a Linux script: builds (``PACKAGE_BUILD_TYPE``, ``make``, ``autogen.sh``),
    patches, copies, and packages that bring their own ``install.sh`` or ``scripts.linux/*.sh``. ckx runs the
    scripts as CK does (ckx.software.ckscript), for repos the user pulled or added only (``ck_scripts_allowed``).
refused
    What ckx cannot run, with the reason: a ``custom.py`` (CK's Python install hooks, which call CK's kernel
    API), no Linux script, a package only for other operating systems, scripts that call the ``ck`` command.

``install_tier`` reads only the entry's files and those of the entry it takes its scripts from (no index
query), and caches script texts, so ``ckx search package --installable`` can call it for every package.
"""
from __future__ import annotations

import functools
import glob
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ckx.core.cid import is_uid
from ckx.store.entry import foreign_origin
from ckx.store.repo import Repo

NATIVE = "native"
CK_SCRIPT = "ck-script"
REFUSED = "refused"
TIERS = (NATIVE, CK_SCRIPT, REFUSED)

CK_TARGET_OS_ID = "linux"
SHARED_INSTALL_SCRIPT = ("download-and-install-package", "cd9ccc74060b3d18")
CUSTOM_FILE = "custom.py"
# The PACKAGE_BUILD_TYPE values the shared script acts on.
BUILD_TYPES = ("configure", "cmake")
# The steps of the shared script that a package's own scripts hook into (run in this order by CK).
PACKAGE_SCRIPT_HOOKS = ("pre-download.sh", "install.sh", "post-install.sh", "post-install2.sh")
# Suffixed names the shared script picks for Linux when PACKAGE_DETECT_VARS=YES.
DETECT_VAR_NAMES = ("PACKAGE_URL", "PACKAGE_NAME", "PACKAGE_NAME1", "PACKAGE_UNGZIP", "PACKAGE_UNZIP",
                    "PACKAGE_UNBZIP", "PACKAGE_UNTAR")
# wget options of PACKAGE_WGET_EXTRA that change nothing about the file ckx fetches.
WGET_HARMLESS = ("-q", "--quiet", "-c", "--continue", "--no-check-certificate", "-nv", "--no-verbose")
# CK's checksum fields, for the file a package downloads (strongest first within each algorithm).
CHECKSUM_FIELDS = (("sha256", ("PACKAGE_SHA256", "PACKAGE_FILE_SHA256", "DOWNLOAD_FILE_SHA256")),
                   ("md5", ("PACKAGE_MD5", "PACKAGE_FILE_MD5", "DOWNLOAD_FILE_MD5", "DATASET_MD5")))
_CK_COMMAND_RE = re.compile(r"(^|[;&|`(]\s*|\$\(\s*)ck\s+(install|virtual|run|detect|find|load|pull|add|set|search)\b", re.M)
_DOWNLOAD_BUILD_RE = re.compile(r"\b(make|cmake|configure|patch|pip|python\d?|git|bazel|gcc|g\+\+)\b")


def yes(value: Any) -> bool:
    """CK's switches: "YES"/"yes"/"on"/"1"/true."""
    return str(value).strip().lower() in ("yes", "on", "1", "true")


@dataclass(frozen=True)
class CkScript:
    """The script CK runs for a package: its file and the entry directory it comes from (``PACKAGE_DIR``)."""

    path: Path
    entry_dir: Path
    entry_name: str
    module: str


@dataclass
class CkPackage:
    """One CK package entry with one variation applied: its install environment, script and version."""

    entry_dir: Path
    repo: Repo
    meta: dict
    variation: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    customize: dict = field(default_factory=dict)

    @classmethod
    def load(cls, meta: Mapping[str, Any], entry_dir: Path, repo: Repo, variation: str | None = None) -> CkPackage:
        """The package with ``install_env`` overlaid by the variation's ``extra_env`` (CK's order).

        Without a variation the ones ``on_by_default`` apply, as in CK.
        """
        meta = dict(meta)
        customize = dict(meta.get("customize") or {})
        env = {str(k): _text(v) for k, v in (customize.get("install_env") or {}).items()}
        variations = meta.get("variations") or {}
        names = [variation] if variation else [n for n, v in variations.items() if yes((v or {}).get("on_by_default"))]
        for name in names:
            spec = variations.get(name) or {}
            env.update({str(k): _text(v) for k, v in (spec.get("extra_env") or {}).items()})
            customize.update(spec.get("extra_customize") or {})
            if spec.get("version") is not None:
                customize["version"] = spec["version"]
        return cls(Path(entry_dir), repo, meta, variation, env, customize)

    # -- what it says -----------------------------------------------------------------------------
    @property
    def version(self) -> str | None:
        value = self.customize.get("version") or self.env.get("PACKAGE_VERSION")
        return str(value) if value not in (None, "") else None

    def linux_env(self) -> dict[str, str]:
        """The env the shared script sees after its PACKAGE_DETECT_VARS step (``X_LINUX`` replaces ``X``)."""
        env = dict(self.env)
        if yes(env.get("PACKAGE_DETECT_VARS")):
            for name in DETECT_VAR_NAMES:
                if env.get(f"{name}_LINUX"):
                    env[name] = env[f"{name}_LINUX"]
        return env

    @property
    def end_full_paths(self) -> list[str]:
        """The installed files CK records (``end_full_path_universal`` or the Linux ``end_full_path``);
        a list in the meta names alternatives (each variation makes one of them)."""
        value = self.meta.get("end_full_path_universal")
        if not value:
            paths = self.meta.get("end_full_path")
            value = paths.get(CK_TARGET_OS_ID) if isinstance(paths, dict) else paths
        values = value if isinstance(value, list) else [value]
        return [str(v).replace("$#sep#$", "/").lstrip("/") for v in values if v]

    @property
    def end_full_path(self) -> str | None:
        """The first of ``end_full_paths`` (None when the package names none)."""
        paths = self.end_full_paths
        return paths[0] if paths else None

    def wget_output(self) -> tuple[str | None, str | None]:
        """(file name, None) from PACKAGE_WGET_EXTRA's ``-O NAME``, or (None, the option ckx does not do)."""
        words = shlex.split(self.linux_env().get("PACKAGE_WGET_EXTRA", ""))
        output = None
        i = 0
        while i < len(words):
            word = words[i]
            if word in ("-O", "--output-document") and i + 1 < len(words):
                output, i = words[i + 1], i + 2
                continue
            if word.startswith("--output-document="):
                output = word.split("=", 1)[1]
            elif word not in WGET_HARMLESS:
                return None, word
            i += 1
        return output, None

    def script(self) -> CkScript | None:
        """The script CK would run on Linux (None when the package names none or it is missing)."""
        name = self.meta.get("process_script")
        if not name:
            return None
        other = self.meta.get("use_scripts_from_another_entry")
        entry_dir, entry_name, module = self.entry_dir, self.entry_dir.name, "package"
        if isinstance(other, dict) and other.get("data_uoa"):
            module = str(other.get("module_uoa") or "package")
            found = ck_entry_dir(self.repo.path, module, str(other["data_uoa"]))
            if found is None:
                return None
            entry_dir, entry_name = found, found.name
        path = entry_dir / f"{name}.sh"
        return CkScript(path, entry_dir, entry_name, module) if path.is_file() else None

    def checksum(self) -> tuple[str, str] | None:
        """(algorithm, digest) from CK's checksum fields, or None when the package declares none."""
        for algorithm, names in CHECKSUM_FIELDS:
            for name in names:
                if self.env.get(name):
                    return algorithm, self.env[name].strip()
        for algorithm in ("sha256", "md5"):
            if self.customize.get(algorithm):
                return algorithm, str(self.customize[algorithm]).strip()
        return None


def ck_entry_dir(repo_root: Path, module: str, uoa: str) -> Path | None:
    """The directory of entry ``uoa`` (alias or uid) of ``module`` in a CK repo, or None."""
    module_dir = repo_root / module
    if not (module_dir / ".cm").is_dir() and is_uid(module):
        alias = _read_line(repo_root / ".cm" / f"alias-u-{module}")
        module_dir = repo_root / alias if alias else module_dir
    direct = module_dir / uoa
    if (direct / ".cm").is_dir():
        return direct
    if is_uid(uoa):
        alias = _read_line(module_dir / ".cm" / f"alias-u-{uoa}")
        if alias and (module_dir / alias / ".cm").is_dir():
            return module_dir / alias
    return None


def is_ck_package(meta: Mapping[str, Any]) -> bool:
    """A CK-format package meta (CK's install fields, no ckx ``source``)."""
    return "source" not in meta and any(k in meta for k in ("process_script", "customize", "soft_uoa",
                                                            "use_scripts_from_another_entry"))


# --------------------------------------------------------------------------- the tiers


def install_tier(meta: Mapping[str, Any], entry_dir: str | os.PathLike[str], repo: Repo,
                 variation: str | None = None) -> tuple[str, str]:
    """(tier, reason) for a package: "native", "ck-script" or "refused" (see the module doc).

    ``meta`` is the entry's meta as stored, ``entry_dir`` its directory, ``repo`` the repo it is in;
    ``variation`` the chosen one (default: CK's ``on_by_default`` ones). A ckx-format package is
    "native" (its ``source.kind`` says how). Reads a few files only; no index query, no subprocess.
    """
    if not is_ck_package(meta):
        kind = (meta.get("source") or {}).get("kind") if isinstance(meta.get("source"), dict) else None
        if kind:
            return NATIVE, f"ckx package (source.kind {kind})"
        return REFUSED, "the package says nothing ckx can install (no source, no CK install script)"
    package = CkPackage.load(meta, Path(entry_dir), repo, variation)
    return classify(package)


def classify(package: CkPackage) -> tuple[str, str]:
    """``install_tier`` for a loaded CK package."""
    meta, entry_dir = package.meta, package.entry_dir
    for key in ("only_for_target_os_tags", "only_for_host_os_tags"):
        tags = [str(t) for t in meta.get(key) or []]
        if tags and CK_TARGET_OS_ID not in tags and "linux-64" not in tags:
            return REFUSED, f"only for {', '.join(tags)} ({key}); ckx installs for Linux"
    hooks = _custom_hooks(entry_dir)
    other = meta.get("use_preprocess_scripts_from_another_entry")
    if not hooks and isinstance(other, dict) and other.get("data_uoa"):
        found = ck_entry_dir(package.repo.path, str(other.get("module_uoa") or "package"), str(other["data_uoa"]))
        hooks = _custom_hooks(found) if found else ()
    if hooks:
        return REFUSED, (f"runs CK's kernel API ({CUSTOM_FILE} {'/'.join(hooks)}), which ckx does not run")
    if not meta.get("process_script"):
        return REFUSED, "names no install script (process_script)"
    script = package.script()
    if script is None:
        where = meta.get("use_scripts_from_another_entry") or {}
        source = f" in {where.get('module_uoa')}:{where.get('data_uoa')}" if where else ""
        return REFUSED, f"no Linux script: {meta['process_script']}.sh is missing{source}"
    own = own_scripts(entry_dir)
    texts = [script_text(script.path)] + [script_text(p) for p in own]
    if any(_CK_COMMAND_RE.search(text) for text in texts):
        return REFUSED, "its scripts call the ck command (CK's kernel), which ckx does not provide"
    if script.entry_name in SHARED_INSTALL_SCRIPT or _shared_alias(script) in SHARED_INSTALL_SCRIPT:
        return _classify_shared(package, own)
    if is_pip_script(script.path):
        if package.env.get("PYTHON_PACKAGE_NAME"):
            return NATIVE, f"pip-installs {package.env['PYTHON_PACKAGE_NAME']} (CK's Python-package script)"
        return CK_SCRIPT, f"runs {_script_label(script, package)} (no PYTHON_PACKAGE_NAME)"
    if _is_download_script(package, texts[0]):
        return NATIVE, "downloads DOWNLOAD_URL/DOWNLOAD_FILE, checks its md5 and unpacks it"
    return CK_SCRIPT, f"runs {_script_label(script, package)}"


def _classify_shared(package: CkPackage, own: list[Path]) -> tuple[str, str]:
    env = package.linux_env()
    steps = []
    if env.get("PACKAGE_BUILD_TYPE") in BUILD_TYPES:  # other values (none, make, skip) build nothing in the script
        steps.append(f"builds with PACKAGE_BUILD_TYPE={env['PACKAGE_BUILD_TYPE']}")
    if yes(env.get("PACKAGE_AUTOGEN")):
        steps.append("runs autogen.sh")
    if not yes(env.get("PACKAGE_SKIP_LINUX_MAKE")):
        steps.append("runs make (PACKAGE_SKIP_LINUX_MAKE is not YES)")
    if yes(env.get("PACKAGE_PATCH")) and patch_files(package):
        steps.append(f"applies {len(patch_files(package))} patch(es) from patch.{CK_TARGET_OS_ID}")
    if yes(env.get("PACKAGE_COPY")) and any((package.entry_dir / d).is_dir() for d in ("copy", f"copy.{CK_TARGET_OS_ID}")):
        steps.append("copies files into the source (PACKAGE_COPY)")
    for name in ("PACKAGE_RUN", "PACKAGE_UN7ZIP", "PACKAGE_RENAME_DIR"):
        if yes(env.get(name)):
            steps.append(f"{name}=YES")
    if env.get("PACKAGE_RUN_EXTRA_LINUX"):
        steps.append("runs PACKAGE_RUN_EXTRA_LINUX")
    if env.get("SUBSTITUTE_ORIGINAL_PACKAGE_DIR"):
        steps.append("takes scripts from SUBSTITUTE_ORIGINAL_PACKAGE_DIR")
    if own:
        steps.append("brings " + ", ".join(f"scripts.{CK_TARGET_OS_ID}/{p.name}" for p in own))
    if yes(env.get("PACKAGE_WGET")):
        unknown = package.wget_output()[1]
        if unknown or env.get("PACKAGE_WGET_HEADER"):
            steps.append(f"passes wget {unknown or '--header'} (PACKAGE_WGET_EXTRA/PACKAGE_WGET_HEADER)")
    if steps:
        return CK_SCRIPT, "download-and-install-package: " + "; ".join(steps)
    if yes(env.get("PACKAGE_GIT")) and env.get("PACKAGE_URL"):
        return NATIVE, "clones PACKAGE_URL with git"
    if yes(env.get("PACKAGE_WGET")) and env.get("PACKAGE_URL") and env.get("PACKAGE_NAME"):
        unpacks = [n[len("PACKAGE_"):].lower() for n in ("PACKAGE_UNGZIP", "PACKAGE_UNTAR", "PACKAGE_UNZIP",
                                                       "PACKAGE_UNBZIP", "PACKAGE_UNXTAR") if yes(env.get(n))]
        return NATIVE, "fetches PACKAGE_URL/PACKAGE_NAME" + (f" ({', '.join(unpacks)})" if unpacks else "")
    return REFUSED, "download-and-install-package with nothing to fetch (no PACKAGE_WGET or PACKAGE_GIT with a URL)"


def ck_scripts_allowed(repo: Repo, meta: Mapping[str, Any] | None = None) -> tuple[bool, str]:
    """(allowed, why): whether ckx runs the install scripts of a CK package from ``repo``.

    Only for repos the user pulled or added (``repo.origin`` "pulled" or "user"), and for the user's
    own local repo; never for a repo unzipped from an archive, nor for an entry that an archive brought
    into another repo (its meta's provenance mark), nor for the built-in repo.
    """
    origin = foreign_origin(meta) if meta is not None else None
    if origin == "unzipped":
        return False, (f"this entry of repo {repo.name} came from an archive (ckx unzip); ckx runs CK scripts "
                       "only from repos the user pulled or added")
    if repo.builtin:
        return False, f"repo {repo.name} is ckx's built-in repo, whose packages are native"
    if repo.origin == "local":
        return True, f"repo {repo.name} is the user's own (entries copied or added there by the user)"
    if repo.origin == "pulled":
        return True, f"repo {repo.name} was pulled by the user ({repo.url or repo.path})"
    if repo.origin == "user":
        return True, f"repo {repo.name} was added by the user from {repo.path}"
    return False, (f"repo {repo.name} came from an archive (ckx unzip); ckx runs CK scripts only from repos "
                   "the user pulled or added")


# --------------------------------------------------------------------------- files


def own_scripts(entry_dir: Path) -> list[Path]:
    """The package's own hooks into the shared script (``scripts.linux/pre-download.sh`` ...)."""
    folder = entry_dir / f"scripts.{CK_TARGET_OS_ID}"
    return [folder / name for name in PACKAGE_SCRIPT_HOOKS if (folder / name).is_file()]


def patch_files(package: CkPackage) -> list[Path]:
    """The patches the shared script applies (``PACKAGE_PATCH_LIST`` or ``patch.linux/*``), existing files only."""
    pattern = package.env.get("PACKAGE_PATCH_LIST")
    if pattern is None:
        folder = package.entry_dir / f"patch.{CK_TARGET_OS_ID}"
        return sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    found: list[Path] = []
    for item in pattern.split():
        for name, value in (("ORIGINAL_PACKAGE_DIR", str(package.entry_dir)), ("CK_TARGET_OS_ID", CK_TARGET_OS_ID)):
            item = item.replace("${%s}" % name, value).replace("$" + name, value)
        found += sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
    return found


@functools.lru_cache(maxsize=4096)
def _cached_text(path: str, mtime_ns: int) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def script_text(path: Path) -> str:
    """A script's text (cached by path and modification time)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return ""
    return _cached_text(str(path), mtime)


def _significant_lines(text: str) -> list[str]:
    """A shell script's commands: no comments, no blank lines, no ``echo``."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("echo"):
            continue
        lines.append(line)
    return lines


def is_pip_script(path: Path) -> bool:
    """The script is CK's Python-package script: pip-installs ``PYTHON_PACKAGE_NAME`` and links ``build``.

    Recognised by its commands: exactly one pip install of ``${PYTHON_PACKAGE_NAME}`` into an
    ``EXTRA_PYTHON_SITE`` prefix, nothing else that builds, fetches or runs Python code.
    """
    lines = _significant_lines(script_text(path))
    pip = [line for line in lines if "-m pip install ${PYTHON_PACKAGE_NAME}" in line]
    if len(pip) != 1:
        return False
    allowed = ("rm -rf ${INSTALL_DIR", "EXTRA_PYTHON_SITE=", "mkdir -p ${EXTRA_PYTHON_SITE}", "ln -s ",
               "SHORT_PYTHON_VERSION=", "export PACKAGE_LIB_DIR=", "export PYTHONPATH=", "if [", "exit 1", "fi",
               "${CK_ENV_COMPILER_PYTHON_FILE} -m pip install ${PYTHON_PACKAGE_NAME}")
    return all(line.startswith(allowed) for line in lines)


def _is_download_script(package: CkPackage, text: str) -> bool:
    """A package script that only downloads DOWNLOAD_URL/DOWNLOAD_FILE, checks its md5 and untars it."""
    if not (package.env.get("DOWNLOAD_URL") and package.env.get("DOWNLOAD_FILE")):
        return False
    if "${DOWNLOAD_URL}" not in text or "${DOWNLOAD_FILE}" not in text:
        return False
    commands = [line for line in _significant_lines(text)
                if not line.startswith(("if [", "fi", "then", "else", "exit", "FULL_", "DOWNLOAD_FILE_MD5_CALC=",
                                        "cd ${INSTALL_DIR}", "rm -rf ${INSTALL_DIR}/._", "chmod "))]
    for line in commands:
        if line.startswith(("wget ", "tar -x", "curl ")):
            continue
        if _DOWNLOAD_BUILD_RE.search(line):
            return False
    return True


def _custom_hooks(entry_dir: Path) -> tuple[str, ...]:
    """The CK hook functions an entry's custom.py defines (empty when it has none)."""
    path = entry_dir / CUSTOM_FILE
    if not path.is_file():
        return ()
    names = re.findall(r"^def\s+([A-Za-z_]\w*)\s*\(", script_text(path), re.M)
    hooks = tuple(n for n in names if not n.startswith("_")) or ("setup",)
    return hooks


def _shared_alias(script: CkScript) -> str:
    return script.entry_dir.name


def _script_label(script: CkScript, package: CkPackage) -> str:
    if script.entry_dir == package.entry_dir:
        return f"its own {script.path.name}"
    return f"{script.module}:{script.entry_name}/{script.path.name}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return "" if value is None else str(value)


def _read_line(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None

