"""The experiment dashboard: one self-contained HTML page (inline SVG plots, tables, tag filters), file or served."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

from ckx import __version__
from ckx.core.cid import Cid
from ckx.store.context import Context
from ckx.core.errors import CkxError, UsageError
from ckx.runs.experiment import (
    MODULE, Experiment, experiment_records, machine_label, read_experiment,
)
from ckx.core.home import Home
from ckx.core.jsonio import write_text_atomic

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
LATENCY_KEYS = ("p50", "p90", "p95", "p97", "p99", "p99.9")
DEFAULT_OUT = "dashboard.html"
LOOPBACK = "127.0.0.1"


# -- data ----------------------------------------------------------------------------------------
def _median(stats: dict, key: str) -> float | None:
    item = stats.get(key)
    return item.get("median") if isinstance(item, dict) else None


def _metric_value(characteristics: dict) -> float | None:
    metric = characteristics.get("metric")
    value = metric.get("value") if isinstance(metric, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def dashboard_data(experiments: Sequence[Experiment], *, title: str = "ckx experiments") -> dict[str, Any]:
    """The JSON the page renders: experiments, machines (deduplicated across them) and one row per point.

    Each point carries its tags (those it was recorded with, plus experiment tags no point carries), the
    headline metric of every repetition, the metric's statistics, median latency percentiles, median top-1
    accuracy, each repetition's validity, its status (ok or failed), the node it ran on and, for a sweep's
    point, the swept parameters' values (``sweep``).
    """
    machines: list[dict[str, Any]] = []
    machine_ids: dict[tuple, int] = {}
    exps: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for index, exp in enumerate(experiments):
        # Tags no point carries (a v0 experiment's, or added to the entry by hand) apply to all its points.
        shared_tags = set(exp.tags) - {t for point in exp.points for t in point.tags}
        exps.append({"cid": exp.cid, "uid": exp.uid, "alias": exp.alias, "path": str(exp.path), "tags": exp.tags,
                     "migrated_from": exp.migrated_from})
        for point in exp.points:
            summary = point.platform
            key = (summary.get("hostname"), summary.get("cpu"), summary.get("os"), summary.get("machine"))
            if key not in machine_ids:
                machine_ids[key] = len(machines)
                machines.append(dict(summary, label=machine_label(summary)))
            stats = point.metric_stats()
            latency = {k: _median(point.statistics, f"latency_ms.{k}") for k in LATENCY_KEYS}
            latency = {k: v for k, v in latency.items() if v is not None}
            deps = {name: (dep.get("version") if isinstance(dep, dict) else None)
                    for name, dep in sorted((point.choices.get("deps") or {}).items())}
            reps = [rep.get("characteristics") or {} for rep in point.repetitions]
            points.append({
                "uid": point.uid,
                "exp": index,
                "program": point.choices.get("program"),
                "cmd_key": point.choices.get("cmd_key"),
                "env": dict(sorted((point.choices.get("env") or {}).items())),
                "deps": deps,
                "machine": machine_ids[key],
                "tags": sorted(shared_tags | set(point.tags)),
                "metric": {k: point.metric.get(k) for k in ("name", "unit", "scenario", "mode")},
                "values": [_metric_value(c) for c in reps],
                "stats": None if stats is None else {k: stats.get(k) for k in
                                                     ("n", "min", "max", "mean", "median", "stdev", "range_pct")},
                "latency": latency or None,
                "accuracy": _median(point.statistics, "accuracy.top1"),
                "valid": [c.get("valid") if isinstance(c.get("valid"), bool) else None for c in reps],
                "n": len(point.repetitions),
                "status": point.status,
                "node": point.node,
                "sweep": dict((point.sweep or {}).get("params") or {}) or None,
            })
    generated = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return {"title": title, "generated": generated, "ckx_version": __version__, "experiments": exps,
            "machines": machines, "points": points}


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' that could close it."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False, default=str)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def render_html(data: dict[str, Any]) -> str:
    """The whole page: CSS, data and JS inline, so it opens from a file with nothing fetched."""
    css = (DATA_DIR / "dashboard.css").read_text(encoding="utf-8")
    js = (DATA_DIR / "dashboard.js").read_text(encoding="utf-8")
    title = _escape(str(data.get("title") or "ckx experiments"))
    counts = (f"{len(data['experiments'])} experiment(s), {len(data['points'])} point(s), "
              f"{len(data['machines'])} machine(s)")
    meta = _escape(f"generated {data['generated']} by ckx {data['ckx_version']} · {counts}")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<div class="meta">{meta}</div>
<div id="filters"></div>
<div id="summary"></div>
</header>
<main>
<noscript><p>This page draws its plots and tables with JavaScript; its data is in the page's source.</p></noscript>
<section id="overview"></section>
<div id="experiments"></div>
</main>
<script type="application/json" id="ckx-data">{_script_json(data)}</script>
<script>
{js}</script>
</body>
</html>
"""


def _sanitise(value: Any) -> Any:
    """NaN and infinities become None so the embedded JSON stays valid."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _sanitise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_sanitise(v) for v in value]
    return value


def collect_experiments(ctx: Context, cids: Sequence[str] = (), *, tags: Any = None) -> list[Experiment]:
    """The experiments named by ``cids`` (all when none), read and migrated; NotFound for a missing name."""
    records = experiment_records(ctx, cids, tags=tags)
    return [read_experiment(r.path, r.meta_path, r) for r in records]


def build_page(ctx: Context, cids: Sequence[str] = (), *, tags: Any = None,
               title: str | None = None) -> tuple[str, dict]:
    """(HTML, data) of the dashboard over ``cids`` (all experiments when empty)."""
    experiments = collect_experiments(ctx, cids, tags=tags)
    data = _sanitise(dashboard_data(experiments, title=title or "ckx experiments"))
    return render_html(data), data


def write_dashboard(ctx: Context, out: Path, cids: Sequence[str] = (), *, tags: Any = None,
                    title: str | None = None) -> dict:
    """Write the page to ``out`` atomically; returns the data it shows."""
    html, data = build_page(ctx, cids, tags=tags, title=title)
    write_text_atomic(out, html)
    return data


# -- serving -------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    server_version = "ckx-dashboard"

    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self._respond(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(head=True)

    def _respond(self, *, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/favicon.ico":
            self._send(204, b"", "image/x-icon", head)
            return
        if path not in ("/", "/index.html", "/data.json"):
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
            return
        ctx = Context(self.server.home, quiet=True, interactive=False)
        try:
            html, data = build_page(ctx, self.server.cids, tags=self.server.tags, title=self.server.title)
        except CkxError as exc:
            self._send(500, f"error: {exc.message}\n".encode(), "text/plain; charset=utf-8", head)
            return
        finally:
            ctx.close()
        if path == "/data.json":
            self._send(200, json.dumps(data, sort_keys=True, indent=2).encode(), "application/json", head)
        else:
            self._send(200, html.encode("utf-8"), "text/html; charset=utf-8", head)

    def _send(self, status: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], home: Home, cids: Sequence[str], tags: Any, title: str | None) -> None:
        super().__init__(address, _Handler)
        self.home = home
        self.cids = list(cids)
        self.tags = tags
        self.title = title


@dataclass
class DashboardServer:
    """A running dashboard server on the loopback interface; the page is rebuilt on every request."""

    httpd: _Server
    thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def close(self) -> None:
        """Stop serving and release the port."""
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(timeout=10)
            self.thread = None
        self.httpd.server_close()

    def __enter__(self) -> "DashboardServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_server(home: Home, cids: Sequence[str] = (), *, port: int = 0, tags: Any = None,
                 title: str | None = None, thread: bool = True) -> DashboardServer:
    """Bind 127.0.0.1:``port`` (0 picks a free one) and, with ``thread``, serve in a daemon thread.

    Raises UsageError when the port cannot be bound.
    """
    try:
        httpd = _Server((LOOPBACK, port), home, cids, tags, title)
    except OSError as exc:
        raise UsageError(f"cannot serve on {LOOPBACK}:{port}: {exc.strerror or exc}",
                         hint="choose another --port (0 picks a free one)") from None
    server = DashboardServer(httpd)
    if thread:
        server.thread = threading.Thread(target=httpd.serve_forever, name="ckx-dashboard", daemon=True)
        server.thread.start()
    return server


# -- the action ----------------------------------------------------------------------------------
def _cids(inp: dict) -> list:
    """The experiments named in the request (none: all); UsageError for another module."""
    module = inp.get("module")
    if module and module != MODULE:
        raise UsageError(f"the dashboard shows experiments, not {module}",
                         hint="usage: ckx dashboard [experiment:NAME ...] [--out=report.html] [--serve --port=N]")
    if inp.get("cids"):
        return [str(c) for c in inp["cids"]]
    if inp.get("entry"):
        return [str(Cid(module=MODULE, entry=inp["entry"], repo=inp.get("repo")))]
    return []


def action_dashboard(ctx: Context, inp: dict) -> dict:
    """``ckx dashboard [experiment:NAME ...] [--out=FILE] [--serve --port=N --serve_for=SECONDS] [--tags=...]``.

    Writes one self-contained HTML page (default ./dashboard.html); with ``--serve`` serves it on 127.0.0.1
    (rebuilt on each request) until Ctrl-C, or for ``--serve_for`` seconds.
    """
    cids = _cids(inp)
    tags = inp.get("tags")
    title = inp.get("title")
    serve = bool(inp.get("serve"))
    out_value = inp.get("out")
    result: dict[str, Any] = {"return": 0}
    lines: list[str] = []
    if not serve or out_value:
        out = Path(out_value or DEFAULT_OUT).expanduser()
        if out.is_dir():
            raise UsageError(f"--out={out} is a directory", hint="give a file name, e.g. --out=report.html")
        data = write_dashboard(ctx, out, cids, tags=tags, title=title)
        if not data["experiments"]:
            ctx.warn("no experiments to show: record some with 'ckx benchmark program:NAME ... --record'")
        result.update(out=str(out.resolve()), experiments=len(data["experiments"]), points=len(data["points"]),
                      repetitions=sum(p["n"] for p in data["points"]), machines=len(data["machines"]))
        lines.append(f"wrote {result['out']} ({result['experiments']} experiment(s), {result['points']} point(s), "
                     f"{result['repetitions']} repetition(s), {result['machines']} machine(s))")
    if serve:
        port = inp.get("port") or 0
        seconds = inp.get("serve_for")
        collect_experiments(ctx, cids, tags=tags)  # a missing name fails now, not on the first request
        server = start_server(ctx.home, cids, port=port, tags=tags, title=title, thread=True)
        result["url"] = server.url
        ctx.info(f"serving the dashboard at {server.url} (Ctrl-C stops)")
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
        except KeyboardInterrupt:
            lines.append("stopped")
        finally:
            server.close()
        lines.append(f"served {server.url}")
    result["text"] = "\n".join(lines)
    return result
