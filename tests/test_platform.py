"""Platform description: what it reads, the recorded platform entry, the per-boot cache, the CLI."""
from __future__ import annotations

import json
import os
import sys

import pytest

from ckx.software import platform as ckx_platform
from ckx.store.index import Query
from ckx.software.platform import current_platform, describe_machine, platform_id, platform_tags


def test_platform_tags_are_cks():
    tags = platform_tags()
    bits = 64 if sys.maxsize > 2**32 else 32
    name = "linux" if sys.platform.startswith("linux") else ckx_platform.os_name()
    assert tags == [f"host-os-{name}-{bits}", f"target-os-{name}-{bits}", f"{bits}bits"]


def test_describe_machine_reports_cpu_memory_os_python():
    info = describe_machine()
    cpu = info["cpu"]
    assert cpu["model"] and cpu["logical_cores"] == os.cpu_count()
    assert 1 <= cpu["usable_cores"] <= cpu["logical_cores"]
    assert isinstance(cpu["flags"], list)
    if sys.platform.startswith("linux"):
        assert cpu["flags"] and cpu["physical_cores"] >= 1
        assert info["memory"]["total_bytes"] > 2**27
    assert info["os"]["name"] and info["os"]["system"]
    assert info["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert info["python"]["executable"] == sys.executable
    assert info["hostname"] and info["machine"]
    json.dumps(info)  # plain data, storable as is


def test_platform_id_ignores_volatile_fields():
    info = describe_machine()
    changed = json.loads(json.dumps(info))
    changed["python"]["version"] = "0.0.0"
    changed["cpu"]["usable_cores"] = 1
    assert platform_id(info) == platform_id(changed)
    changed["hostname"] = info["hostname"] + "-other"
    assert platform_id(info) != platform_id(changed)


def test_current_platform_records_one_entry_and_caches_it(ctx):
    first = current_platform(ctx)
    entries = ctx.index.query(Query(module="platform"))
    assert len(entries) == 1 and entries[0].uid == first["uid"]
    meta = entries[0].meta
    assert meta["platform_id"] == first["platform_id"] and "platform" in meta["tags"]
    assert meta["features"]["cpu"]["model"] == first["cpu"]["model"]
    # the second call reads the cache: prove it by marking the cached copy
    cache = ctx.home.cache / "platform.json"
    data = json.loads(cache.read_text())
    data["platform"]["marker"] = "from-cache"
    cache.write_text(json.dumps(data))
    assert current_platform(ctx)["marker"] == "from-cache"
    # refresh describes the machine again, and the same machine keeps its entry
    again = current_platform(ctx, refresh=True)
    assert "marker" not in again and again["uid"] == first["uid"]
    assert len(ctx.index.query(Query(module="platform"))) == 1


def test_a_removed_platform_entry_is_recorded_again(ctx):
    first = current_platform(ctx)
    result = ckx_platform.action_detect_platform(ctx, {})
    assert result["platform"]["uid"] == first["uid"]
    from ckx.store.generic import delete_tree

    delete_tree(ctx.index.query(Query(module="platform"))[0].path)
    ctx.index.refresh(["platform"], force=True)
    second = current_platform(ctx)
    assert second["uid"] != first["uid"]
    assert len(ctx.index.query(Query(module="platform"))) == 1


def test_a_corrupt_cache_is_ignored(ctx):
    ctx.home.cache.mkdir(parents=True, exist_ok=True)
    (ctx.home.cache / "platform.json").write_text("{not json")
    assert current_platform(ctx)["uid"]


@pytest.mark.skipif(not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="needs a Linux boot id")
def test_the_cache_is_per_boot(ctx):
    current_platform(ctx)
    cache = ctx.home.cache / "platform.json"
    data = json.loads(cache.read_text())
    data["boot_id"] = "another-boot"
    data["platform"]["marker"] = "stale"
    cache.write_text(json.dumps(data))
    assert "marker" not in current_platform(ctx)


def test_detect_platform_cli(cli, cli_json):
    proc = cli("detect", "platform")
    assert proc.returncode == 0, proc.stderr
    for label in ("cpu", "cores", "memory", "os", "python"):
        assert any(line.startswith(label) for line in proc.stdout.splitlines()), proc.stdout
    code, data = cli_json("detect", "platform")
    assert code == 0 and data["platform"]["uid"] and data["platform"]["cpu"]["logical_cores"] == os.cpu_count()
