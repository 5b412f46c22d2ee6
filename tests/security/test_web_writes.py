"""Without --allow_writes, `ckx serve` runs no code and changes no file, even for a client holding the token."""
from __future__ import annotations

import time

import pytest

from webclient import Client, start_server  # noqa: F401  (start_server is a fixture)
from ckx.api import access
from ckx.web.policy import web_actions

WRITING_ACTIONS = [a for a in web_actions() if not a.read_only]


def _shell_program(marker) -> dict:
    return {"action": "add", "module": "program", "entry": "evil", "tags": "evil",
            "meta": {"tags": ["evil"], "run_cmds": {"go": {"argv": ["/bin/sh", "-c", f"touch {marker}"]}}}}


def _wait_for_job(client: Client, job: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, data = client.get(f"/api/jobs/{job}")
        if data.get("status") in ("done", "failed"):
            return data
        assert status == 200 and time.monotonic() < deadline, data
        time.sleep(0.05)


def test_adding_a_shell_program_is_refused(start_server, tmp_path):
    client = Client.of(start_server())
    marker = tmp_path / "ran"
    status, data = client.post(_shell_program(marker))
    assert status == 403, data
    assert "'add program'" in data["error"] and "--allow_writes" in data["error"]
    assert access({"action": "load", "module": "program", "entry": "evil"})["return"] == 3


def test_running_a_program_is_refused_and_nothing_runs(start_server, tmp_path):
    marker = tmp_path / "ran"
    assert access(_shell_program(marker))["return"] == 0  # put there by the machine's owner
    client = Client.of(start_server())
    for request in ({"action": "run", "module": "program", "entry": "evil", "cmd_key": "go"},
                    {"action": "benchmark", "module": "program", "entry": "evil", "cmd_key": "go", "repetitions": 2}):
        status, data = client.post(request)
        assert status == 403 and f"'{request['action']} program'" in data["error"] and "--allow_writes" in data["error"]
    assert client.get("/api/jobs")[1]["jobs"] == []
    time.sleep(0.2)
    assert not marker.exists()


def test_the_same_program_runs_once_writes_are_allowed(start_server, tmp_path):
    """The attack is real: with --allow_writes the very same requests add the program and run its shell."""
    marker = tmp_path / "ran"
    client = Client.of(start_server(allow_writes=True))
    assert client.post(_shell_program(marker))[0] == 200
    status, data = client.post({"action": "run", "module": "program", "entry": "evil", "cmd_key": "go"})
    assert status == 202, data
    assert _wait_for_job(client, data["job"])["status"] == "done"
    assert marker.exists()


@pytest.mark.parametrize("spelling", ["rm", "delete", "remove"])
def test_deleting_the_builtin_softs_is_refused(start_server, spelling):
    before = access({"action": "list", "module": "soft", "repo": "builtin"})
    assert before["return"] == 0 and len(before["entries"]) > 3
    client = Client.of(start_server())
    status, data = client.post({"action": spelling, "cid": "builtin:soft:*", "force": True})
    assert status == 403 and "--allow_writes" in data["error"], data
    after = access({"action": "list", "module": "soft", "repo": "builtin"})
    assert [e["cid"] for e in after["entries"]] == [e["cid"] for e in before["entries"]]


@pytest.mark.parametrize("action", WRITING_ACTIONS, ids=lambda a: a.label)
def test_every_action_that_writes_is_refused(start_server, action):
    client = Client.of(start_server())
    request = {"action": action.name, "module": action.module or "experiment", "entry": "x", "force": True}
    if action.name in ("ren", "cp"):
        request["cids"] = ["experiment:x", "experiment:y"]
    if not any(o.name == "force" for o in action.options):
        del request["force"]
    status, data = client.post(request)
    assert status == 403, data
    assert data["return"] == 2 and "--allow_writes" in data["error"] and action.name in data["error"]
    assert client.get("/api/jobs")[1]["jobs"] == []


def test_writing_actions_are_those_not_read_only_and_reads_still_work(start_server):
    labels = {a.label for a in WRITING_ACTIONS}
    assert {"add", "rm", "ren", "cp", "install package", "run program", "benchmark program", "replay experiment",
            "pull repo", "unzip repo", "add repo", "rm repo", "rm env", "detect soft", "reindex"} <= labels
    client = Client.of(start_server())
    status, data = client.post({"action": "list", "module": "soft", "repo": "builtin"})
    assert status == 200 and data["entries"]
    assert client.get("/")[1]["allow_writes"] is False
