"""``atelier doctor``: the machine and the engines, as the app sees them."""

from __future__ import annotations

from desktop.cli_output import clean, print_json
from engines.byte_sizes import format_bytes
from engines.machine.hardware import probe
from engines.registry import discover
from engines.workspace import open_workspace


# ONNX Runtime providers that onnxruntime lists but Atelier never selects, and why they are left out:
# listing them would suggest that Atelier can send work somewhere, which it never does.
UNUSED_PROVIDERS = {
    # A cloud provider built into the standard wheels: it runs nothing locally and does nothing
    # unless configured with an endpoint and a key. Atelier never configures it.
    "AzureExecutionProvider",
}


def llama_build_info() -> dict:
    """What the installed llama.cpp build can do (imports llama_cpp: CLI only)."""
    try:
        import llama_cpp

        from engines.llama.backends import cpu_variants, ensure_backends_loaded

        devices = ensure_backends_loaded()
        return {
            "version": getattr(llama_cpp, "__version__", None),
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "devices": devices,
            "cpu_variants": cpu_variants(),
        }
    except Exception as exc:  # not installed or broken: report, don't crash
        return {"error": str(exc)}


def gather() -> dict:
    workspace = open_workspace()
    report = probe(workspace.paths.models).to_dict()
    engines = []
    for name, plugin in discover().items():
        state = plugin.availability()
        engines.append(
            {
                "name": name,
                "kind": getattr(plugin, "kind", "unknown"),
                "display_name": getattr(plugin, "display_name", name) or name,
                "available": state.available,
                "version": state.version,
                "reason": state.reason,
            }
        )
    report["engines"] = engines
    from engines.machine.accelerators import probe_accelerators

    accelerators = probe_accelerators().to_dict()
    accelerators["onnxruntime_providers"] = [p for p in accelerators["onnxruntime_providers"] if p not in UNUSED_PROVIDERS]
    report["accelerators"] = accelerators
    from engines.envs import ImageEngineEnv, image_engine_root

    status = ImageEngineEnv(image_engine_root(workspace.paths)).status()
    report["image_engine"] = {
        "state": status.state,
        "python": str(status.python) if status.python else None,
        "size_bytes": status.size_bytes,
        "torch_variant": status.torch_variant,
        "reason": status.reason,
    }
    report["llama_cpp"] = llama_build_info()
    report["paths"] = {
        "data": str(workspace.paths.data),
        "models": str(workspace.paths.models),
        "config": str(workspace.paths.config),
        "logs": str(workspace.paths.logs),
    }
    return report


def run_doctor(args) -> int:
    report = gather()
    if args.json:
        print_json(report)
        return 0
    cpu, memory = report["cpu"], report["memory"]
    lines = [
        f"System:   {report['os']}, Python {report['python']}",
        f"CPU:      {cpu['name']} ({cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores)",
        f"          {', '.join(cpu['features']) or 'no SIMD extensions detected'}",
        f"Memory:   {format_bytes(memory['available_bytes'])} available of {format_bytes(memory['total_bytes'])}",
    ]
    if report["gpus"]:
        for gpu in report["gpus"]:
            free, total = (format_bytes(gpu[key], unknown="unknown") for key in ("free_bytes", "total_bytes"))
            lines.append(f"GPU:      {gpu['name']}: {free} free of {total} (driver {gpu['driver'] or 'n/a'})")
    else:
        lines.append("GPU:      none supported found (CPU only)")
    if report.get("disk"):
        lines.append(f"Disk:     {format_bytes(report['disk']['free_bytes'])} free in {report['disk']['path']}")
    lines.append("Engines:")
    for engine in report["engines"]:
        status = f"available ({engine['version']})" if engine["available"] else f"unavailable: {engine['reason']}"
        lines.append(f"  {engine['display_name']:<40} {engine['kind']:<6} {status}")
    acc = report["accelerators"]
    torch_info = acc["torch"]
    if torch_info["installed"]:
        where = "CUDA" if torch_info["cuda"] else "MPS" if torch_info["mps"] else "CPU"
        bf16 = ", bf16 on CPU" if torch_info["cpu_bf16"] else ""
        lines.append(f"PyTorch:  {torch_info['version']} on {where}{bf16}")
    else:
        lines.append("PyTorch:  not installed (needed for image generation)")
    if acc["onnxruntime_version"]:
        lines.append(f"ONNX Runtime: {acc['onnxruntime_version']}, providers: {', '.join(acc['onnxruntime_providers'])}")
    else:
        lines.append("ONNX Runtime: not installed")
    image = report["image_engine"]
    lines.append(f"Image engine: {image['state'].replace('_', ' ')}" + (f" ({image['reason']})" if image["reason"] else ""))
    build = report["llama_cpp"]
    if "error" not in build:
        variants = f", CPU variants: {len(build['cpu_variants'])}" if build["cpu_variants"] else ""
        lines.append(f"llama.cpp: GPU offload {'yes' if build['gpu_offload'] else 'no'}{variants}")
    print("\n".join(clean(line) for line in lines))  # names and reasons come from drivers, files and packages
    return 0
