"""Hostile meta files: a YAML alias bomb, runaway JSON nesting and oversized metas are skipped with a warning."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ckx.api import access
from ckx.core.errors import MetaError
from ckx.core.home import Home
from ckx.core.jsonio import read_meta_file
from ckx.core.limits import Limits
from ckx.store.context import Context

# 374 bytes that expand to 9**9 strings through aliases: a "billion laughs" in YAML.
ALIAS_BOMB = "\n".join(
    ["uid: 00000000000000b0", "alias: bomb", "tags: [t]", "schema_version: 1", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join(["*" + chr(97 + i)] * 9) + "]" for i in range(8)]
) + "\n"


def _local_experiments(home: Path) -> Path:
    Context(Home(home)).registry  # creates the local repo
    return Home(home).local_repo / "experiments"


def _entry(root: Path, alias: str, text: str, name: str = "meta.json") -> Path:
    edir = root / alias
    edir.mkdir(parents=True)
    (edir / name).write_text(text)
    return edir / name


def _good(root: Path) -> None:
    _entry(root, "good", json.dumps({"uid": "00000000000000a1", "alias": "good", "tags": ["t"], "schema_version": 1}))


def _search(tags: str = "t") -> dict:
    result = access({"action": "search", "module": "experiment", "tags": tags})
    assert result["return"] == 0, result
    return result


def test_yaml_alias_bomb_is_refused_quickly_and_its_module_stays_listable(ckx_home):
    root = _local_experiments(ckx_home)
    _good(root)
    bomb = _entry(root, "bomb", ALIAS_BOMB, name="meta.yaml")
    assert len(ALIAS_BOMB.encode()) < 600
    started = time.monotonic()
    result = _search()
    assert time.monotonic() - started < 5
    assert [e["alias"] for e in result["entries"] if e["repo"] == "local"] == ["good"]
    assert any(str(bomb) in w and "alias" in w for w in result["warnings"])


def test_yaml_without_aliases_still_loads(tmp_path):
    path = tmp_path / "meta.yaml"
    path.write_text("uid: 00000000000000b1\nalias: plain\ntags: [x, y]\nanchor_free: {a: 1}\n")
    assert read_meta_file(path)["tags"] == ["x", "y"]


def test_deeply_nested_json_is_a_corrupt_meta_warning_not_a_crash(ckx_home):
    root = _local_experiments(ckx_home)
    _good(root)
    deep = _entry(root, "deep", '{"uid": "00000000000000a2", "alias": "deep", "tags": ["t"], "x": '
                  + "[" * 200_000 + "]" * 200_000 + "}")
    result = _search()
    assert [e["alias"] for e in result["entries"] if e["repo"] == "local"] == ["good"]
    assert any(str(deep) in w and "nested" in w for w in result["warnings"])


def test_nesting_just_over_the_depth_limit_is_refused_and_at_the_limit_accepted(tmp_path):
    limit = Limits().meta_max_depth
    at_limit = tmp_path / "at.json"
    at_limit.write_text('{"a": ' + "[" * (limit - 1) + "]" * (limit - 1) + "}")
    assert read_meta_file(at_limit)
    over = tmp_path / "over.json"
    over.write_text('{"a": ' + "[" * limit + "]" * limit + "}")
    with pytest.raises(MetaError, match="over the limit"):
        read_meta_file(over)


def test_oversized_meta_is_refused_naming_the_file_and_the_setting(tmp_path):
    big = tmp_path / "meta.json"
    big.write_text(json.dumps({"uid": "00000000000000a3", "blob": "x" * 4096}))
    with pytest.raises(MetaError) as caught:
        read_meta_file(big, max_bytes=1024)
    assert str(big) in caught.value.message and "meta_max_bytes" in (caught.value.hint or "")


def test_limits_come_from_settings_json_and_bad_values_name_the_field(tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"limits": {"meta_max_depth": 12, "request_timeout_s": 2.5}}))
    limits = Limits.from_settings(settings)
    assert limits.meta_max_depth == 12 and limits.request_timeout_s == 2.5
    assert limits.archive_max_ratio == Limits().archive_max_ratio
    settings.write_text(json.dumps({"limits": {"meta_max_dept": 12}}))
    with pytest.raises(MetaError, match="unknown limit 'meta_max_dept'"):
        Limits.from_settings(settings)
    settings.write_text(json.dumps({"limits": {"archive_max_ratio": -1}}))
    with pytest.raises(MetaError, match="limits.*archive_max_ratio"):
        Limits.from_settings(settings)
    assert Limits.from_settings(tmp_path / "absent.json") == Limits()


@pytest.mark.parametrize("name, text, complaint", [
    ("meta.json", '{"n": ' + "9" * 5000 + "}", "cannot read"),
    ("meta.yaml", "n: " + "9" * 5000 + "\n", "cannot read"),
    ("meta.json", '{"alias": "\\ud800"}', "field 'alias': a string holds a lone surrogate"),
    ("meta.json", '{"tags": ["a", "x\\udfff"]}', "field 'tags[1]'"),
    ("meta.yaml", "alias: x\nwhen: 2001-12-14\n", "field 'when': a YAML date is not JSON data"),
    ("meta.yaml", "alias: x\nblob: !!binary aGVsbG8=\n", "field 'blob': a YAML bytes"),
    ("meta.yaml", "alias: x\nenv:\n  1: one\n", "field 'env': key 1 (int) is not a string"),
])
def test_values_json_cannot_hold_are_meta_errors_naming_the_field(tmp_path, name, text, complaint):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MetaError) as caught:
        read_meta_file(path)
    assert str(path) in caught.value.message and complaint in caught.value.message


def test_an_entry_with_a_lone_surrogate_is_skipped_with_a_warning(ckx_home):
    root = _local_experiments(ckx_home)
    _good(root)
    _entry(root, "surrogate", '{"uid": "00000000000000a2", "alias": "\\ud800", "tags": ["t"], "schema_version": 1}')
    result = _search()
    assert [e["alias"] for e in result["entries"]] == ["good"]
    assert any("lone surrogate" in w for w in result["warnings"])


def test_meta_limits_in_settings_json_govern_listing_after_a_reindex(ckx_home):
    root = _local_experiments(ckx_home)
    _good(root)
    nested = _entry(root, "nested", json.dumps({"uid": "00000000000000a4", "alias": "nested", "tags": ["t"],
                                                "x": [[[[[[[[[[1]]]]]]]]]]}))
    assert sorted(e["alias"] for e in _search()["entries"] if e["repo"] == "local") == ["good", "nested"]
    # a stricter home: the entry is refused with a warning naming the file and the setting
    (ckx_home / "settings.json").write_text(json.dumps({"limits": {"meta_max_depth": 5}}))
    assert access({"action": "reindex"})["return"] == 0
    result = _search()
    assert [e["alias"] for e in result["entries"] if e["repo"] == "local"] == ["good"]
    assert any(str(nested) in w and "over the limit of 5" in w for w in result["warnings"])
    # raised again, then reindexed: the entry is back
    (ckx_home / "settings.json").write_text(json.dumps({"limits": {"meta_max_depth": 64}}))
    assert access({"action": "reindex"})["return"] == 0
    assert sorted(e["alias"] for e in _search()["entries"] if e["repo"] == "local") == ["good", "nested"]
