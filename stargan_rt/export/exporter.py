"""Bundle -> fp32 ONNX graphs, one per network, with frame I/O folded in (needs torch).

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): in torch 2.13
the dynamo exporter needs the separate ``onnxscript`` package, and the TorchScript exporter maps
``F.instance_norm(use_input_stats=True)`` straight to ``InstanceNormalization``.
"""
from __future__ import annotations

import io as _io
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from stargan_rt.bundle import Bundle
from stargan_rt.errors import UserError
from stargan_rt.export.contract import DEFAULT_NETWORKS, IO_VARIANTS, io_spec
from stargan_rt.export.onnx_io import save_model, set_metadata

OPSET = 17
TRACE_BATCH = 2  # trace with N > 1 so nothing gets specialised to a batch of one


def onnx_file_name(network: str, io: str, precision: str = "fp32") -> str:
    return f"{network}.{io}.{precision}.onnx"


def _example_inputs(spec: dict, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for item in spec["inputs"]:
        shape = [TRACE_BATCH if d == "N" else d for d in item["shape"]]
        if item["dtype"] == "uint8":
            tensors.append(torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8))
        elif item["dtype"] == "int64":
            tensors.append(torch.zeros(shape, dtype=torch.int64))
        elif item["name"].startswith("mask_"):
            tensors.append(torch.rand(shape, generator=gen))
        elif item["name"] == "image":
            tensors.append(torch.rand(shape, generator=gen) * 2 - 1)
        else:
            tensors.append(torch.randn(shape, generator=gen))
    return tuple(tensors)


def simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """onnxsim with the dynamic batch kept; returns (model, 'onnxsim' | 'no (reason)')."""
    try:
        import onnxsim
    except ImportError:
        return model, "no (onnxsim not installed: pip install 'stargan-rt[export]')"
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises plain RuntimeErrors from C++
        return model, f"no (onnxsim failed: {type(exc).__name__}: {str(exc)[:200]})"
    if not ok:
        return model, "no (onnxsim's own check of the simplified graph failed)"
    return simplified, "onnxsim"


def export_network(bundle: Bundle, network: str, io: str, out_path: str | os.PathLike,
                   do_simplify: bool = True) -> dict:
    """Export one network of an opened bundle; returns a small report dict."""
    import torch

    from stargan_rt.export.wrappers import wrap
    from stargan_rt.models.build import load_network

    manifest = bundle.manifest
    if network not in DEFAULT_NETWORKS[manifest.arch]:
        raise UserError(f"cannot export {manifest.arch} network {network!r}; exportable: "
                        f"{', '.join(DEFAULT_NETWORKS[manifest.arch])}")
    if not bundle.has(network):
        raise UserError(f"{bundle.path}: the bundle has no {network} network (it has: "
                        f"{', '.join(manifest.networks)}); re-import or re-train with it, "
                        "or leave it out of --networks")
    spec = io_spec(manifest.arch, network, io, manifest.image_size, manifest.config,
                   len(manifest.domains))
    start = time.perf_counter()
    net = load_network(bundle, network)
    module = wrap(manifest.arch, network, net, io, manifest.config.get("w_hpf", 0))
    args = _example_inputs(spec)
    in_names = [s["name"] for s in spec["inputs"]]
    out_names = [s["name"] for s in spec["outputs"]]
    dynamic = {name: {0: "N"} for name in in_names + out_names}
    buffer = _io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET,
                          input_names=in_names, output_names=out_names, dynamic_axes=dynamic,
                          do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    export_s = time.perf_counter() - start
    status = "no (disabled)"
    if do_simplify:
        model, status = simplify(model)
    _check_structure(model, manifest.arch, network, str(out_path))
    set_metadata(model, network=network, arch=manifest.arch, bundle_hash=bundle.content_hash,
                 bundle_name=manifest.name or bundle.path.name, domains=manifest.domain_names,
                 image_size=str(manifest.image_size), io=io, precision="fp32", contract=spec,
                 config=manifest.config, adain_fused="0", simplified=status,
                 exporter=f"torch {torch.__version__} torch.onnx.export(dynamo=False) "
                          f"opset {OPSET}")
    model.producer_name = "stargan-rt"
    onnx.checker.check_model(model)
    save_model(model, out_path)
    return {"network": network, "path": Path(out_path), "export_s": export_s,
            "total_s": time.perf_counter() - start, "simplified": status,
            "nodes": len(model.graph.node)}


def _check_structure(model: onnx.ModelProto, arch: str, network: str, where: str) -> None:
    """Guard the properties the engines rely on."""
    ops = {n.op_type for n in model.graph.node}
    if network == "generator" and "InstanceNormalization" not in ops:
        raise RuntimeError(f"{where}: exported generator has no InstanceNormalization node")
    if arch == "v1" and network == "generator" and "BatchNormalization" in ops:
        raise RuntimeError(f"{where}: v1 generator exported with running-statistics "
                           "BatchNormalization instead of instance statistics")


def export_bundle(bundle_path: str | os.PathLike, out_dir: str | os.PathLike,
                  io: str = "uint8", networks=None, do_simplify: bool = True,
                  log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Export a bundle's inference networks to fp32 ONNX; returns {network: path}.

    ``networks=None`` exports every network of DEFAULT_NETWORKS the bundle has (v1: generator and
    the discriminator's classifier when present; v2: generator, mapping_network, style_encoder and
    fan when w_hpf > 0). Files are ``<out_dir>/<network>.<io>.fp32.onnx``, written atomically.
    """
    if io not in IO_VARIANTS:
        raise UserError(f"unknown I/O variant {io!r}; expected one of {', '.join(IO_VARIANTS)}")
    bundle = Bundle.open(bundle_path)
    manifest = bundle.manifest
    if networks is None:
        networks = [n for n in DEFAULT_NETWORKS[manifest.arch] if bundle.has(n)]
        if manifest.arch == "v2":
            w_hpf = manifest.config.get("w_hpf", 0)
            if w_hpf > 0 and not bundle.has("fan"):
                raise UserError(f"{bundle.path}: w_hpf={w_hpf} needs the fan network for its "
                                "masks, but the bundle has none; re-import with --fan wing.ckpt")
            if not w_hpf > 0 and "fan" in networks:
                networks.remove("fan")  # masks are unused when w_hpf == 0
    elif isinstance(networks, str):
        networks = [networks]
    out_dir = Path(out_dir)
    results: dict[str, Path] = {}
    for network in networks:
        report = export_network(bundle, network, io, out_dir / onnx_file_name(network, io),
                                do_simplify)
        if log:
            log(f"exported {network} ({io} I/O) -> {report['path']} in {report['total_s']:.1f} s, "
                f"{report['nodes']} nodes, simplified: {report['simplified']}")
        results[network] = report["path"]
    return results


def contract_of(model: onnx.ModelProto) -> dict:
    """The I/O contract stored in an exported file's metadata."""
    from stargan_rt.export.onnx_io import get_metadata

    return json.loads(get_metadata(model)["contract"])


def numpy_inputs(spec: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching a resolved contract entry (for checks and tests)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for item in spec["inputs"]:
        shape = [batch if d == "N" else d for d in item["shape"]]
        if item["dtype"] == "uint8":
            feeds[item["name"]] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif item["dtype"] == "int64":
            feeds[item["name"]] = rng.integers(0, 2, shape).astype(np.int64)
        elif item["name"].startswith("mask_"):
            feeds[item["name"]] = rng.random(shape, dtype=np.float32)
        else:
            feeds[item["name"]] = rng.standard_normal(shape).astype(np.float32)
    return feeds
