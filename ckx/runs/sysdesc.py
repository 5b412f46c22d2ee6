"""The system description and measurements.json of a submission: what ``detect platform`` and the runs show, plus the user's fields."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ckx.store.context import Context
from ckx.core.errors import UsageError
from ckx.software.platform import current_platform

# The checker's 35 fields. ckx fills those the machine or the runs show; the rest stay empty until the
# user gives them (the checker then names each one that must not be empty).
SYSTEM_FIELDS = (
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect", "accelerator_interconnect",
    "accelerator_interconnect_topology", "accelerator_memory_configuration", "accelerator_on-chip_memories",
    "cooling", "hw_notes", "sw_notes", "host_network_card_count", "system_type_detail",
)
# With no accelerator these fields have a true answer: there is none.
NO_ACCELERATOR = ("accelerator_model_name", "accelerator_memory_capacity", "accelerator_frequency",
                  "accelerator_host_interconnect", "accelerator_interconnect", "accelerator_interconnect_topology",
                  "accelerator_memory_configuration", "accelerator_on-chip_memories")
MEASUREMENT_FIELDS = ("input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                      "weight_transformations")
FRAMEWORK_PACKAGES = ("onnxruntime", "torch", "tensorflow", "openvino", "tvm")


def _machine(ctx: Context) -> dict[str, Any]:

    return current_platform(ctx)


def _software(versions: Mapping[str, Any]) -> tuple[str, str]:
    frameworks = [f"{name} {versions[name]}" for name in FRAMEWORK_PACKAGES if versions.get(name)]
    others = [f"{name} {value}" for name, value in sorted(versions.items()) if name not in FRAMEWORK_PACKAGES]
    return ", ".join(frameworks), ", ".join(others)


def detected_fields(ctx: Context, result: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the machine (``detect platform``) and the run's result.json support."""
    machine = _machine(ctx)
    cpu = machine.get("cpu") or {}
    memory = machine.get("memory") or {}
    os_info = machine.get("os") or {}
    framework, others = _software(result.get("versions") or {})
    fields: dict[str, Any] = {
        "system_name": f"{cpu.get('model') or 'CPU'} ({machine.get('hostname') or 'host'})",
        "number_of_nodes": 1,
        "host_processor_model_name": cpu.get("model") or "",
        "host_processors_per_node": cpu.get("sockets") or "",
        "host_processor_core_count": cpu.get("physical_cores") or "",
        "host_memory_capacity": f"{memory['total_gib']} GiB" if memory.get("total_gib") else "",
        "framework": framework,
        "operating_system": f"{os_info.get('name') or os_info.get('system') or ''} (kernel {os_info.get('release')})",
        "other_software_stack": others,
        "sw_notes": "ckx MLPerf image-classification harness",
    }
    if not machine.get("accelerators"):
        fields["accelerators_per_node"] = "0"  # a string: the checker rejects the number 0 as empty
        fields.update({name: "N/A" for name in NO_ACCELERATOR})
    return fields


def system_description(ctx: Context, result: Mapping[str, Any], user: Mapping[str, Any], *, division: str,
                       system_type: str) -> dict[str, Any]:
    """The 35-field system JSON: detected values, then the user's (which win); unknown user keys are errors."""
    unknown = sorted(set(user) - set(SYSTEM_FIELDS) - {"system_id"})
    if unknown:
        raise UsageError(f"--system: unknown field(s) {', '.join(unknown)}",
                         hint="the fields are those of the checker's system description: " + ", ".join(SYSTEM_FIELDS))
    system: dict[str, Any] = {name: "" for name in SYSTEM_FIELDS}
    system.update(detected_fields(ctx, result))
    system.update({"division": division, "system_type": system_type})
    system.update({k: v for k, v in user.items() if k in SYSTEM_FIELDS})
    return system


def _precision(result: Mapping[str, Any]) -> str:
    model = result.get("model") or {}
    name = os.path.basename(str(model.get("path") or "")).lower()
    return "int8" if "int8" in name or "quant" in name else "fp32"


def measurements_json(result: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """measurements.json of one scenario: the model file and its data types, then the user's fields."""
    unknown = sorted(set(user) - set(MEASUREMENT_FIELDS))
    if unknown:
        raise UsageError(f"--measurements: unknown field(s) {', '.join(unknown)}; known: {', '.join(MEASUREMENT_FIELDS)}")
    model = result.get("model") or {}
    precision = _precision(result)
    values = {"input_data_types": precision, "retraining": "no",
              "starting_weights_filename": Path(str(model.get("path") or "")).name,
              "weight_data_types": precision, "weight_transformations": "none" if precision == "fp32" else "quantization"}
    values.update({k: v for k, v in user.items()})
    return values
