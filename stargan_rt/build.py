"""Building engines for a bundle: ``build(BuildRequest) -> BuildResult``.

Resolve the bundle and the target, make sure the ONNX graphs exist (exported into the engine
cache when missing, which needs torch), convert them to the graph each network needs on that
target at that precision, and build or reuse one engine per network. The translator
(``runtime.Translator``) only loads and runs what this returns.

Which networks run at the requested precision: the per-frame generator. The classifier, mapping
network and style encoder stay fp32 (cheap, or computed once, and accuracy-sensitive); so does
the v2 FAN, which runs on every frame too, unless the target has a faster float precision
within the build's accuracy budget (``Backend.support_precision``: OpenVINO's bf16 in int8
builds on CPUs where bf16 pays).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stargan_rt.backends import PRECISIONS, BuildInfo, Engine, get_backend, get_engine
from stargan_rt.backends.cache import EngineCache, disk_error
from stargan_rt.bundle import Bundle
from stargan_rt.errors import UserError
from stargan_rt.targets import resolve_target

Log = Callable[[str], None]

# Networks whose engines run at the requested precision; the rest stay fp32, except the
# per-frame support networks, at the target's support_precision.
REDUCED_PRECISION_NETWORKS = ("generator",)
SUPPORT_NETWORKS = ("fan",)


def networks_for(bundle: Bundle) -> list[str]:
    """The inference networks a translator needs for this bundle."""
    manifest = bundle.manifest
    if manifest.arch == "v1":
        return ["generator"] + (["discriminator"] if bundle.has("discriminator") else [])
    nets = ["generator", "mapping_network", "style_encoder"]
    if manifest.config.get("w_hpf", 0) > 0:
        if not bundle.has("fan"):
            raise UserError(f"{bundle.path}: w_hpf > 0 needs the fan network for its masks, but "
                            "the bundle has none; re-import with --fan wing.ckpt")
        nets.append("fan")
    return nets


def network_precision(network: str, precision: str, target: str) -> str:
    """The precision ``network``'s engine runs at in a build at ``precision`` on ``target``."""
    if network in REDUCED_PRECISION_NETWORKS:
        return precision
    if network in SUPPORT_NETWORKS:
        return get_backend(target).support_precision(precision)
    return "fp32"


@dataclass
class BuildRequest:
    model: str | os.PathLike | None = None   # bundle path or built-in name (None: the default)
    target: str = "auto"
    precision: str = "fp32"
    cache_dir: str | os.PathLike | None = None
    io: str = "uint8"                         # frame I/O in the graph, or "float" (parity)
    calib: str | os.PathLike | None = None    # int8 calibration frames (None: built-in faces)
    networks: list[str] | None = None         # None: what the bundle needs (networks_for)
    rebuild: bool = False
    streams: int = 1                          # concurrent calls each engine serves (a pipeline's
                                              # frames in flight); 1: lowest latency


@dataclass
class GraphSet:
    """The ONNX files one build uses: {network: path} plus notes for the user."""

    paths: dict[str, Path]
    notes: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    bundle: Bundle
    target: str
    precision: str
    engines: dict[str, Engine]
    infos: list[BuildInfo]      # one per network: built or reused, where, size, seconds
    graphs: GraphSet

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()


def build(request: BuildRequest, log: Log = print) -> BuildResult:
    """Build or reuse the engines a request asks for (see the module docstring)."""
    from stargan_rt.defaults import resolve_model

    bundle = Bundle.open(resolve_model(request.model))
    target = resolve_target(request.target, log)
    cache = EngineCache(request.cache_dir)
    graphs = prepare_graphs(bundle, target, request.precision, cache, request.io, request.calib,
                            request.networks, log, request.rebuild)
    if target == "onnxruntime" and request.precision == "fp16":
        from stargan_rt.backends.onnxruntime import providers

        if providers() == ["CPUExecutionProvider"]:
            # precision is never picked for the user (fp32 is the default); say what bench saw
            graphs.notes.append("onnxruntime fp16 on the CPU provider runs no faster than fp32 "
                                "(`stargan-rt bench`); use fp32 or int8 there, or openvino")
    for note in graphs.notes:
        log(note)
    engines: dict[str, Engine] = {}
    infos = []
    try:
        for net, path in graphs.paths.items():
            precision = network_precision(net, request.precision, target)
            engine, info = get_engine(target, path, net, precision, cache, log,
                                      rebuild=request.rebuild, streams=request.streams)
            engines[net] = engine
            infos.append(info)
    except BaseException:
        for engine in engines.values():
            engine.close()
        raise
    return BuildResult(bundle, target, request.precision, engines, infos, graphs)


# -- ONNX graphs for a build -----------------------------------------------------------------------
def _calib_id(calib) -> str:
    if calib is None:
        return "demo"
    path = Path(calib)
    try:
        stamp = f"{path.resolve()}:{path.stat().st_mtime_ns}"
    except OSError:
        raise UserError(f"--calib {calib}: no such file or directory; give a folder of face "
                        "images or a video (at least 256 frames)") from None
    return hashlib.sha256(stamp.encode()).hexdigest()[:10]


def prepare_graphs(bundle: Bundle, target: str, precision: str, cache: EngineCache,
                   io: str = "uint8", calib=None, networks: list[str] | None = None,
                   log: Log = print, rebuild: bool = False) -> GraphSet:
    """Export (when not cached) and convert the graphs a target needs at a precision.

    A cached graph that does not load (truncated, corrupt) is a one-line error pointing at
    ``build --rebuild``, which exports and converts every graph again."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    backend = get_backend(target)
    networks = networks or networks_for(bundle)
    for net in networks:
        if not bundle.has(net):
            raise UserError(f"{bundle.path}: the bundle has no {net} network "
                            f"(it has: {', '.join(bundle.manifest.networks)})")
    folder = cache.onnx_dir(bundle.content_hash, io)
    fp32 = {net: folder / f"{net}.{io}.fp32.onnx" for net in networks}
    missing = [net for net, path in fp32.items() if rebuild or not _cached_graph_usable(path)]
    if missing:
        _export(bundle, folder, io, missing, fp32, cache, log)
    paths, notes = {}, []
    for net in networks:
        choice = backend.graph_for(net, network_precision(net, precision, target),
                                   bundle.manifest.arch)
        if choice.note:
            notes.append(choice.note)
        if choice.precision == "fp32" and not choice.fuse_adain:
            paths[net] = fp32[net]
            continue
        form, ext = "", ".onnx"
        if choice.precision == "int8" and not choice.fuse_adain:
            # each target's own int8 form (export/int8_targets.py): qdq, nncf or u8s8
            from stargan_rt.export.int8_targets import FORMS, int8_form

            form = int8_form(target)
            ext = FORMS[form]
        suffix = choice.precision
        if choice.precision == "int8":  # the calibration frames and the guard shape the graph
            from stargan_rt.export.int8 import INT8_MIN_PSNR

            suffix = f"int8-{_calib_id(calib)}-g{INT8_MIN_PSNR:g}"
        if form and form != "qdq":
            suffix += f"-{form}"
        float_precision = backend.int8_float_precision() if choice.precision == "int8" else "fp32"
        if float_precision != "fp32":   # the guard checked the graph at that precision
            suffix += f"-{float_precision}"
        path = folder / f"{net}.{io}.{suffix}{'.fused' if choice.fuse_adain else ''}{ext}"
        if rebuild or net in missing or not _cached_graph_usable(path):
            _convert(fp32[net], path, choice.precision, choice.fuse_adain, calib, bundle, target,
                     log, form, float_precision)
        paths[net] = path
    return GraphSet(paths, notes)


def _cached_graph_usable(path: Path) -> bool:
    """Whether a cached ONNX file is there; one that does not load (truncated, corrupt) is a
    one-line error that says how to make it again (build --rebuild)."""
    if not path.is_file():
        return False
    if path.suffix != ".onnx":
        return True  # another target's own form (e.g. an OpenVINO IR): its engine checks it
    from stargan_rt.export.onnx_io import load_model

    try:
        load_model(path, check=True)
    except UserError as exc:
        reason = str(exc).split(": ", 1)[-1].split(";")[0]
        raise UserError(f"{path}: the cached ONNX graph is unusable ({reason}); make it again "
                        "with `stargan-rt build --rebuild` and the same --model, --target, "
                        "--precision and --cache-dir") from None
    return True


def _export(bundle: Bundle, folder: Path, io: str, missing: list[str], fp32: dict[str, Path],
            cache: EngineCache, log: Log) -> None:
    if not _torch_available():
        raise UserError(f"no exported ONNX for {', '.join(missing)} of {bundle.path} in the "
                        f"engine cache {cache.root}, and exporting needs torch: "
                        "pip install 'stargan-rt[export]' (or copy the cache from a machine "
                        "that built it)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(folder, exc, cache.root) from None
    from stargan_rt.export import export_bundle

    made = export_bundle(bundle.path, folder, io=io, networks=missing, log=log)
    for net, path in made.items():
        if Path(path) != fp32[net]:
            os.replace(path, fp32[net])


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401  (only to know whether exporting is possible)
    except ImportError:
        return False
    return True


def _convert(source: Path, out: Path, precision: str, fuse: bool, calib, bundle: Bundle,
             target: str, log: Log, form: str = "", float_precision: str = "fp32") -> None:
    try:
        from stargan_rt.export.calibration import load_calibration_frames
        from stargan_rt.export.precision import prepare_graph
    except ImportError as exc:
        raise UserError(f"precision {precision} needs the precision converter "
                        f"(stargan_rt.export.precision: {exc})") from None
    frames = None
    if precision == "int8":
        frames = load_calibration_frames(calib, bundle.manifest.image_size)
        log(f"calibrating int8 on {len(frames)} frames from {calib or 'the built-in demo data'}")
        if form and form != "qdq":
            from stargan_rt.export.int8_targets import convert_int8

            info = convert_int8(target, form, source, out, frames, log, float_precision)
            log(f"{target} int8 ({form}): {info.get('quantized_convs')} convs int8, check "
                f"{info.get('check_psnr_db')} dB against fp32")
            return
    _, fused = prepare_graph(source, out, precision, fuse=fuse, calib_frames=frames)
    if fuse:
        log(f"{target}: fused {fused} AdaIN blocks into plugin nodes -> {out.name}")
