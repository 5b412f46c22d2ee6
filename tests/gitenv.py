"""git for tests: an identity for the commits tests make, and a hermetic configuration.

    from gitenv import GIT_IDENTITY, hermetic_git  # noqa: F401  (importing the fixture turns it on)
"""
from __future__ import annotations

import pytest

GIT_IDENTITY = ["-c", "user.name=ckx test", "-c", "user.email=test@example.org", "-c", "commit.gpgsign=false"]


@pytest.fixture(autouse=True)
def hermetic_git(tmp_path_factory, monkeypatch):
    """git sees neither the user's nor the system's configuration (so no identity either), nor a template."""
    empty = tmp_path_factory.mktemp("gitconfig") / "config"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_TEMPLATE_DIR", raising=False)
