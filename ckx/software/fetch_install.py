"""Installing a download-source package: fetch the verified file into the cache, then unpack or place it.

ckx.software.install drives the installation (lock, staging directory, move into place, env record); for a
package whose source is a download (``source.kind`` ``download``, or a CK package's native download and its
script's prefetch) it calls :func:`download`, which

- fetches ``source.urls`` into the download cache (mirrors, resume, the URL map, offline refusal), never more
  than ``source.size`` bytes nor the ``download_max_bytes`` limit, or copies ``--local_path`` there instead;
- verifies the declared md5 or sha256 (or records the sha256 when the meta asks for it);
- unpacks the file safely into the staging directory (within the ``archive_*`` limits), or copies it there
  for a CK script to work on, or links it there as the installation's one file.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ckx.store.context import Context
from ckx.store.index import Query
from ckx.core.limits import Limits
from ckx.core.errors import ChecksumMismatch, DownloadError, IntegrityError, MetaError
from ckx.software.packages import Candidate
from ckx.transfer.checksum import Checker, file_digest
from ckx.transfer.fetch import (cached_download_path, download_hint, fetch, filename_from_url, load_url_map,
                                local_copy, url_key)
from ckx.transfer.unpack import unpack


@dataclass(frozen=True)
class Downloaded:
    """What :func:`download` did: the cached file, the sha256 it recorded, the file the env points to.

    ``sha256`` is set only when the package declares no checksum and asks for one to be recorded;
    ``main_file`` only when the file was kept whole (not unpacked, not copied for a script).
    """

    path: Path
    sha256: str | None = None
    main_file: str | None = None


def download(
    ctx: Context, candidate: Candidate, source: Mapping, *, stage: Path, local_path: Path | None, offline: bool,
    limits: Limits,
) -> Downloaded:
    """Fetch (or take from ``local_path``) the file ``source`` describes and put it into ``stage``.

    Raises MetaError (no URL, a bad ``source.size``), ChecksumMismatch / UnsafeArchive (5; a corrupt or
    unsafe archive is removed from the cache), DownloadError (1; it names the package and variation, and
    its hint offers an embedded offline alternative where there is one).
    """
    label = candidate.label
    urls = [str(u) for u in source.get("urls") or []]
    if not urls and local_path is None:
        raise MetaError(f"{candidate.record.meta_path}: field 'source.urls': package {label} has no URL")
    checker = Checker.from_meta(source)
    if checker is None and not source.get("record_sha256"):
        ctx.warn(f"{label} declares no md5 or sha256: the download cannot be verified")
    origin = urls[0] if urls else str(local_path)
    filename = source.get("filename") or (filename_from_url(urls[0]) if urls else Path(origin).name)
    dest = cached_download_path(ctx.home, filename, checker.expected if checker else url_key(origin))
    if local_path is not None:
        ctx.info(f"using {local_path} instead of downloading {filename}")
        try:
            local_copy(local_path, dest, checker)
        except ChecksumMismatch as exc:
            exc.hint = f"{local_path} is not the file {label} describes; nothing was installed"
            raise
    else:
        ways = _ways_forward(ctx, candidate)
        try:
            fetch(urls, dest, checker=checker, reporter=ctx.reporter, offline=offline,
                  url_map=load_url_map(ctx.home), extra_hint=ways, max_bytes=limits.download_max_bytes,
                  expected_size=_declared_size(candidate, source))
        except ChecksumMismatch as exc:
            exc.hint = "; ".join(filter(None, [exc.hint, download_hint(ways)]))
            raise
        except DownloadError as exc:
            # Callers (ckx run) name the package and variation in their own ways forward.
            exc.package = candidate.record.alias
            exc.variation = candidate.variation
            raise
    sha256 = main_file = None
    if checker is None and source.get("record_sha256"):
        sha256 = file_digest(dest)
        ctx.info(f"recorded the sha256 of {filename}: {sha256} (the package declares no checksum)")
    if source.get("unpack"):
        ctx.info(f"unpacking {filename}")
        try:
            unpack(dest, stage, strip_components=int(source.get("strip_components") or 0), limits=limits)
        except IntegrityError:
            dest.unlink(missing_ok=True)  # unsafe or corrupt: never offer it from the cache again
            raise
    elif source.get("copy"):  # a CK script works on it in place: never a hard link into the cache
        shutil.copy2(dest, stage / filename)
    else:
        _link_or_copy(dest, stage / filename)
        main_file = filename
    return Downloaded(dest, sha256, main_file)


def _declared_size(candidate: Candidate, source: Mapping) -> int | None:
    """The download's size in bytes as ``source.size`` states it (None when it does not)."""
    size = source.get("size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise MetaError(f"{candidate.record.meta_path}: field 'source.size': "
                        f"must be a positive number of bytes, not {size!r}")
    return size


def _ways_forward(ctx: Context, candidate: Candidate) -> str | None:
    """The embedded offline alternative to this package, for a download's hint (None when none)."""
    soft = candidate.meta.get("soft")
    if not soft or candidate.meta.get("embedded_default"):
        return None
    alternatives = []
    for record in ctx.index.query(Query(module="package")):
        meta = record.meta
        if record.path != candidate.record.path and meta.get("soft") == soft and meta.get("embedded_default"):
            alternatives.append(record.alias or record.uid)
    if not alternatives:
        return None
    names = ", ".join(f"ckx install package:{a}" for a in alternatives if a)
    return f"or use the embedded default ({names}; 'ckx run program:... --offline' picks it)"


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
