"""The OpenAPI 3 description of the web API, its actions enumerated from the web policy."""
from __future__ import annotations

from typing import Any

from ckx import __version__
from ckx.api import Action
from ckx.web.policy import web_actions


# =========================================================================== OpenAPI


def _options_text(action: Action) -> str:
    """`; options: name (type), ...` for an action's declared options, or nothing."""
    if not action.options:
        return ""
    return "; options: " + ", ".join(f"`{o.name}` ({o.type})" for o in action.options)


def openapi_spec(*, allow_writes: bool = False) -> dict:
    """The OpenAPI 3.0 description of this web API (actions enumerated from WEB_ACTIONS).

    Every operation needs the bearer token; ``allow_writes`` says whether the actions that are not
    read-only run (else they answer 403).
    """
    actions = web_actions()
    names = sorted({a.name for a in actions})
    read_only = sorted({a.name for a in actions if a.read_only})
    long_names = sorted({a.name for a in actions if a.long})
    listing = "\n".join(f"- `{a.name}{' ' + a.module if a.module else ''}`: {a.summary}"
                        f"{' (job)' if a.long else ''}{' (GET allowed)' if a.read_only else ''}{_options_text(a)}"
                        for a in actions)

    def ref(name: str) -> dict:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(description: str, schema: str = "Result") -> dict:
        return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}

    writes = ("this server runs them" if allow_writes else
              "this server was started without --allow_writes, so they answer 403")
    errors = {
        "400": answer("bad input: invalid JSON, a bad CID (`../`), an option the action does not declare or of "
                      "the wrong type, too many items or too deep, a path on the server (`local_path`, "
                      "`search_dir`, ...), or the action's return 2", "Error"),
        "401": answer("missing or wrong token", "Error"),
        "403": answer("an action not offered over the web, an action that runs code or changes files on a server "
                      "without --allow_writes, or a non-loopback Host on a loopback server", "Error"),
        "404": answer("unknown action, or the action's return 3 (not found, ambiguous)", "Error"),
        "408": answer("the request did not arrive in time", "Error"),
        "414": answer("the URL is too long", "Error"),
        "422": answer("the action's return 5 (integrity: checksum, unsafe archive)", "Error"),
        "431": answer("too many or too large header lines", "Error"),
        "500": answer("any other non-zero return", "Error"),
    }
    query_params = [
        {"name": "action", "in": "query", "required": True, "schema": {"type": "string", "enum": read_only}},
        *({"name": key, "in": "query", "required": False, "schema": {"type": "string"}}
          for key in ("module", "entry", "repo", "cid", "tags", "search_string")),
    ]
    spec: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "ckx web API",
            "version": __version__,
            "description": ("The ckx actions as JSON. A request is what `ckx.access()` takes; a result is what it "
                            "returns. HTTP status from `return`: 0 -> 200, 2 -> 400, 3 -> 404, 5 -> 422, others -> "
                            "500. Long actions answer 202 with a job to poll. Every request needs the server's token "
                            "(`Authorization: Bearer TOKEN`). Actions that are not marked GET allowed run code or "
                            f"change files: {writes}.\n\nActions:\n" + listing),
        },
        "paths": {
            "/api": {
                "get": {
                    "summary": "Run a read-only action; inputs as query parameters (dotted keys nest)",
                    "operationId": "getAction",
                    "parameters": query_params,
                    "responses": {"200": answer("the action's result"), "405": answer("the action is not read-only", "Error"),
                                  **errors},
                },
                "post": {
                    "summary": "Run an action",
                    "operationId": "postAction",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": ref("Request")}}},
                    "responses": {
                        "200": answer("the action's result"),
                        "202": answer("a long action was queued as a job", "JobAccepted"),
                        "411": answer("no Content-Length", "Error"),
                        "413": answer("the body is larger than the server's limit", "Error"),
                        "415": answer("the body is not application/json", "Error"),
                        **errors,
                    },
                },
            },
            "/api/jobs": {
                "get": {"summary": "The jobs this server remembers", "operationId": "listJobs",
                        "responses": {"200": answer("jobs, without their results", "JobList")}},
            },
            "/api/jobs/{job_id}": {
                "get": {
                    "summary": "A job's status and, once finished, its result",
                    "operationId": "getJob",
                    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": answer("the job", "Job"), "404": answer("no such job", "Error")},
                },
            },
            "/openapi.json": {
                "get": {"summary": "This description", "operationId": "getOpenApi",
                        "responses": {"200": {"description": "the OpenAPI document",
                                              "content": {"application/json": {"schema": {"type": "object"}}}}}},
            },
        },
        "components": {
            "schemas": {
                "Request": {
                    "type": "object",
                    "required": ["action"],
                    "properties": {
                        "action": {"type": "string", "enum": names},
                        "module": {"type": "string"}, "entry": {"type": "string"}, "repo": {"type": "string"},
                        "cid": {"type": "string", "description": "[repo:]module[:entry]"},
                        "cids": {"type": "array", "items": {"type": "string"}},
                        "tags": {"type": "string", "description": "comma list; -tag excludes"},
                    },
                    "additionalProperties": True,
                },
                "Result": {
                    "type": "object",
                    "required": ["return"],
                    "properties": {
                        "return": {"type": "integer", "description": "0 ok; ckx's exit codes otherwise"},
                        "warnings": {"type": "array", "items": {"type": "string"}},
                        "messages": {"type": "array", "items": {"type": "string"}},
                    },
                    "additionalProperties": True,
                },
                "Error": {
                    "type": "object",
                    "required": ["return", "error"],
                    "properties": {"return": {"type": "integer"}, "error": {"type": "string"},
                                   "hint": {"type": "string"}, "error_type": {"type": "string"}},
                    "additionalProperties": True,
                },
                "JobAccepted": {
                    "type": "object",
                    "required": ["return", "job", "status"],
                    "properties": {"return": {"type": "integer"}, "job": {"type": "string"},
                                   "status": {"type": "string"}, "href": {"type": "string"}},
                },
                "Job": {
                    "type": "object",
                    "required": ["job", "status", "action"],
                    "properties": {
                        "return": {"type": "integer"},
                        "job": {"type": "string"},
                        "action": {"type": "string", "enum": long_names or names},
                        "module": {"type": "string", "nullable": True},
                        "status": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
                        "created": {"type": "string"}, "started": {"type": "string"}, "finished": {"type": "string"},
                        "result": ref("Result"),
                        "http_status": {"type": "integer"},
                    },
                },
                "JobList": {
                    "type": "object",
                    "properties": {"return": {"type": "integer"}, "jobs": {"type": "array", "items": ref("Job")}},
                },
            },
        },
    }
    spec["components"]["securitySchemes"] = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
    spec["security"] = [{"bearerAuth": []}]
    return spec


__all__ = ["openapi_spec"]
