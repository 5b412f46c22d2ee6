"""Tags for the flavour of a torch wheel, read from its version's local part (2.13.0+cpu, 2.4.0+cu121)."""
from __future__ import annotations


def extra_tags(*, version: str | None) -> list[str]:
    """torch-cpu for a +cpu wheel, torch-cuda for +cu*, torch-rocm for +rocm*; nothing when unknown."""
    local = (version or "").partition("+")[2]
    if local == "cpu":
        return ["torch-cpu"]
    if local.startswith("cu"):
        return ["torch-cuda"]
    if local.startswith("rocm"):
        return ["torch-rocm"]
    return []

