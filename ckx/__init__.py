"""ckx: a CK-style package and workflow manager for ML benchmarking."""
from __future__ import annotations

import logging

__version__ = "0.1.0"

# A library logs nothing by default: the CLI installs its own reporter, access() callers get warnings
# in the result, and an application that wants ckx's log records adds a handler of its own.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "access"]


def access(request: dict) -> dict:
    """Run one action from a JSON-like dict and return a JSON-like dict.

    ``{"action": "search", "module": "package", "tags": "model,onnx"}`` returns
    ``{"return": 0, ...}`` on success or ``{"return": <exit code>, "error": "..."}``.
    """
    from ckx.api import access as _access  # lazily: `import ckx` stays light, and ckx.api imports ckx

    return _access(request)
