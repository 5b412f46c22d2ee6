"""ckx: a CK-style package and workflow manager for ML benchmarking."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "access"]


def access(request: dict) -> dict:
    """Run one action from a JSON-like dict and return a JSON-like dict.

    ``{"action": "search", "module": "package", "tags": "model,onnx"}`` returns
    ``{"return": 0, ...}`` on success or ``{"return": <exit code>, "error": "..."}``.
    """
    from .api import access as _access

    return _access(request)
