"""What unzip checks before it writes: every member's name, the archive's expansion, its data (CRC
included), and which entries carry code.

Member names go through the checker package unpacking uses (ckx.transfer.safety). The expansion
bounds come from ckx.core.limits (``archive_max_members``, ``archive_max_bytes``,
``archive_max_ratio``, overridable in ``$CKX_HOME/settings.json``). A member whose data does not
decompress to what the archive says (a bad CRC, a cut stream) is an IntegrityError naming the
archive and the member, never a traceback.
"""
from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from ckx.core.errors import IntegrityError, MetaError, UnsafeArchive
from ckx.core.limits import DEFAULT_LIMITS, Limits, nesting_depth
from ckx.transfer.safety import ArchiveChecker

# Kinds whose entries are run by ckx (install and detect hooks, programs' command lines).
CODE_KINDS = ("package", "soft", "program")
# Files that ckx or Python may run: hooks (install.py, detect.py, customize.py), scripts, site hooks.
CODE_SUFFIXES = (".py", ".pyc", ".pth", ".sh", ".bash", ".bat", ".cmd", ".ps1")
# Meta keys that hold a command line.
CODE_KEYS = ("argv", "run_cmds", "run_cmd", "run_cmd_main", "run_script")


@dataclass(frozen=True)
class Member:
    """An archive file that passed every check: its path parts below the repo root."""

    parts: tuple[str, ...]
    info: zipfile.ZipInfo

    @property
    def name(self) -> str:
        return "/".join(self.parts)


def check_zip_members(archive: Path, zf: zipfile.ZipFile, limits: Limits = DEFAULT_LIMITS) -> list[Member]:
    """Every file member of ``zf``, checked by ckx.transfer.safety's ArchiveChecker (the checker package
    unpacking uses), sorted by path. A repo archive may not write into a ``.git`` directory either.

    The checker also counts the members and the sizes they state against ``limits`` (member count,
    expanded bytes, expansion ratio), before anything is extracted. Reading a member never yields
    more than its stated size (zipfile stops there, and the CRC check fails), so the stated sizes
    bound the writes.

    Raises UnsafeArchive for a refused member or an archive over the limits, IntegrityError for an
    encrypted member. Directory members are checked and dropped.
    """
    checker = ArchiveChecker(archive, verb="unzip", limits=limits)
    files = []
    for planned in checker.check(checker.zip_members(zf), unique=True):
        if any(p.lower() == ".git" for p in planned.parts):
            raise checker.refuse(planned.entry.name, "would write into a .git directory")
        if planned.entry.kind == "file":
            files.append(Member(planned.parts, planned.entry.ref))  # type: ignore[arg-type]
    return sorted(files, key=lambda member: member.parts)


def _corrupt(archive: Path, name: str, exc: BaseException) -> IntegrityError:
    return IntegrityError(f"{archive}: member {name} is corrupt ({exc}); nothing was extracted",
                          hint="the archive is damaged: fetch or make it again")


# What zipfile raises for damaged data: a bad CRC or header, a cut or undecodable stream, a missing codec.
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError, OSError)


def read_chunks(zf: zipfile.ZipFile, archive: Path, member: Member) -> Iterator[bytes]:
    """A member's data in chunks, read to its end (so its CRC is checked); IntegrityError when damaged."""
    try:
        with zf.open(member.info) as stream:
            while chunk := stream.read(1 << 20):
                yield chunk
    except _DAMAGE as exc:
        raise _corrupt(archive, member.name, exc) from None


def read_member(zf: zipfile.ZipFile, archive: Path, member: Member, *, max_bytes: int | None = None) -> bytes:
    """A whole member (CRC checked); MetaError when over ``max_bytes``, IntegrityError when damaged."""
    if max_bytes is not None and member.info.file_size > max_bytes:
        raise MetaError(f"{archive}: {member.name} holds {member.info.file_size} bytes, over the meta limit of "
                        f"{max_bytes}", hint="raise 'limits.meta_max_bytes' in $CKX_HOME/settings.json if it is trusted")
    return b"".join(read_chunks(zf, archive, member))


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors and aliases: an archive's YAML may not expand itself."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases (*name) are not accepted in meta files")
        return super().compose_node(parent, index)


def read_member_meta(zf: zipfile.ZipFile, archive: Path, member: Member, limits: Limits) -> dict:
    """A meta (JSON, or YAML by its suffix) from the archive, bounded in size and depth."""
    data = read_member(zf, archive, member, max_bytes=limits.meta_max_bytes)
    try:
        if member.parts[-1].endswith((".yaml", ".yml")):
            value = yaml.load(data, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader that also refuses aliases)
        else:
            value = json.loads(data)
    except (yaml.YAMLError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        kind = "YAML" if member.parts[-1].endswith((".yaml", ".yml")) else "JSON"
        raise MetaError(f"{archive}: {member.name} is not valid {kind} ({str(exc)[:200]})") from None
    if not isinstance(value, dict):
        raise MetaError(f"{archive}: {member.name} must hold an object")
    if nesting_depth(value) > limits.meta_max_depth:
        raise MetaError(f"{archive}: {member.name} nests deeper than {limits.meta_max_depth} levels",
                        hint="raise 'limits.meta_max_depth' in $CKX_HOME/settings.json if it is trusted")
    return value


def _command_keys(meta: Any) -> list[str]:
    """The command-line keys anywhere in ``meta`` (walked without recursion)."""
    found: list[str] = []
    stack = [meta]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in CODE_KEYS and key not in found:
                    found.append(key)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return sorted(found)


def is_code_file(parts: Iterable[str]) -> bool:
    """True for a file ckx or Python may run (a hook, a script, a .pth site hook)."""
    name = list(parts)[-1].lower()
    return name.endswith(CODE_SUFFIXES)


def code_reasons(module: str, meta: dict | None, files: Iterable[tuple[str, ...]]) -> list[str]:
    """Why an entry carries code (empty when it does not): its kind, its code files, its command keys."""
    reasons = []
    if module in CODE_KINDS:
        reasons.append(f"a {module}")
    scripts = sorted("/".join(parts) for parts in files if is_code_file(parts))
    if scripts:
        reasons.append(("scripts " if len(scripts) > 1 else "script ") + ", ".join(scripts))
    keys = _command_keys(meta or {})
    if keys:
        reasons.append("meta keys " + ", ".join(keys))
    return reasons


__all__ = ["CODE_KINDS", "CODE_SUFFIXES", "Member", "check_zip_members",
           "code_reasons", "is_code_file", "read_chunks", "read_member", "read_member_meta"]
