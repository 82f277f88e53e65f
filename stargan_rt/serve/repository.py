"""`export --triton REPO`: a Triton model repository for one bundle.

One Triton model per network, named ``<bundle>-<network>`` so that several bundles can share a
repository and a server. Each ``config.pbtxt`` is written from the export contract
(``stargan_rt.export.contract.io_spec``): the graph's input / output names, dtypes and dims
without the batch axis (Triton's ``max_batch_size`` adds it), dynamic batching and an instance
group. A 1-D per-item tensor (the v2 ``domain``, shape ``[N]``) is declared ``dims: [1]`` with
``reshape: { shape: [] }``, Triton's form for one scalar per batch item.

Two kinds of repository:

- ``native`` (NVIDIA's Triton container): ``1/model.onnx`` for onnxruntime, ``1/model.xml`` +
  ``model.bin`` for openvino, ``1/model.plan`` for tensorrt with the AdaIN plugin library in
  ``plugins/``. Those backends run the graph themselves.
- ``python`` (any tritonserver with the Python backend, e.g. the CPU-only one of the
  nvidia-pytriton wheel): the same graph files, run by ``stargan_rt.serve.python_model`` with
  stargan-rt's own OpenVINO / ONNX Runtime engine, so outputs equal the local engine's.

For v2 two ensembles make one call out of a translation: ``<bundle>-translate_latent`` (crops,
z, domain) and ``<bundle>-translate_reference`` (crops, reference image, domain).

Every model's parameters carry the bundle's content hash, target, precision and network: a
client checks them before it sends a frame.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from stargan_rt.backends import get_backend
from stargan_rt.backends.cache import EngineCache
from stargan_rt.build import network_precision, networks_for, prepare_graphs
from stargan_rt.bundle import Bundle
from stargan_rt.errors import UserError
from stargan_rt.export.contract import io_spec

Log = Callable[[str], None]

KINDS = ("python", "native")
# numpy dtype -> Triton's name on the wire (clients); configs spell it TYPE_<name>
WIRE_DTYPES = {"uint8": "UINT8", "float32": "FP32", "float16": "FP16", "int64": "INT64",
               "int32": "INT32"}
TRITON_DTYPES = {k: "TYPE_" + v for k, v in WIRE_DTYPES.items()}
# Native Triton backends: the config key naming it, its value, and the model file's name.
NATIVE = {"onnxruntime": ("platform", "onnxruntime_onnx", "model.onnx"),
          "openvino": ("backend", "openvino", "model.xml"),
          "tensorrt": ("platform", "tensorrt_plan", "model.plan")}
PARAM_PREFIX = "stargan_rt."
PYTHON_MODEL_SHIM = (
    "# Triton Python-backend entry point: stargan-rt's engines serve this network\n"
    "# (the class lives in the installed package; see stargan_rt/serve/python_model.py).\n"
    "from stargan_rt.serve.python_model import TritonPythonModel  # noqa: F401\n")
ENSEMBLES = ("translate_latent", "translate_reference")


@dataclass(frozen=True)
class Batching:
    """Triton's scheduling for each network model."""

    max_batch_size: int = 8
    preferred: tuple[int, ...] = (4, 8)
    queue_delay_us: int = 2000   # how long a request may wait for others to join its batch
    instances: int = 1           # model instances (each runs one batch at a time)

    def check(self) -> None:
        if self.max_batch_size < 1:
            raise UserError(f"--max-batch {self.max_batch_size}: must be at least 1")
        bad = [p for p in self.preferred if not 1 <= p <= self.max_batch_size]
        if bad:
            raise UserError(f"preferred batch sizes {bad} lie outside 1..{self.max_batch_size}")
        if self.queue_delay_us < 0 or self.instances < 1:
            raise UserError("--queue-delay-us must be >= 0 and --instances >= 1")


def model_prefix(bundle: Bundle) -> str:
    """The model-name prefix of a bundle's networks: its folder's name (a catalogue name for
    pulled models, demo-v1 / demo-v2 for the built-in ones), with anything but letters, digits,
    '.', '_' and '-' replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", bundle.path.name)


def model_name(bundle: Bundle, network: str) -> str:
    return f"{model_prefix(bundle)}-{network}"


# -- config text -----------------------------------------------------------------------------------
def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor(spec: dict, reshape_scalars: bool = True) -> str:
    """One input / output entry. ``reshape_scalars`` False: an ensemble's own tensors, which
    Triton matches against the wire form ([N, 1]) of the models they feed."""
    dims = list(spec["shape"][1:])   # the batch axis is Triton's (max_batch_size > 0)
    reshape = ""
    if not dims:                     # one scalar per item: sent as [N, 1], seen as [N]
        dims = [1]
        reshape = " reshape: { shape: [ ] }" if reshape_scalars else ""
    return (f"  {{ name: {_quote(spec['name'])} data_type: {TRITON_DTYPES[spec['dtype']]} "
            f"dims: [ {', '.join(str(int(d)) for d in dims)} ]{reshape} }}")


def _parameters(params: dict[str, str]) -> str:
    return "\n".join(f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}"
                     for k, v in params.items())


def network_config(name: str, spec: dict, runner: tuple[str, str], batching: Batching,
                   params: dict[str, str], kind: str = "KIND_CPU") -> str:
    """config.pbtxt of one network model. ``runner``: ("backend", "python") or a native
    ("platform", "onnxruntime_onnx") pair."""
    preferred = ", ".join(str(p) for p in batching.preferred)
    return "\n".join([
        f"name: {_quote(name)}",
        f"{runner[0]}: {_quote(runner[1])}",
        f"max_batch_size: {batching.max_batch_size}",
        "input [", ",\n".join(_tensor(s) for s in spec["inputs"]), "]",
        "output [", ",\n".join(_tensor(s) for s in spec["outputs"]), "]",
        f"dynamic_batching {{ preferred_batch_size: [ {preferred} ] "
        f"max_queue_delay_microseconds: {batching.queue_delay_us} }}",
        f"instance_group [ {{ kind: {kind} count: {batching.instances} }} ]",
        _parameters(params),
    ]) + "\n"


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    ins = " ".join(f"input_map {{ key: {_quote(k)} value: {_quote(v)} }}" for k, v in inputs.items())
    outs = " ".join(f"output_map {{ key: {_quote(k)} value: {_quote(v)} }}"
                    for k, v in outputs.items())
    return f"    {{ model_name: {_quote(model)} model_version: -1 {ins} {outs} }}"


def ensemble_configs(bundle: Bundle, specs: dict[str, dict], batching: Batching,
                     params: dict[str, str]) -> dict[str, str]:
    """v2: {name: config.pbtxt} of the two ensembles (style from z or from a reference, then the
    generator, with the FAN's masks when the generator takes them)."""
    gen = specs["generator"]
    image = gen["inputs"][0]
    masks = [s["name"] for s in gen["inputs"] if s["name"].startswith("mask_")]
    fan_step = ([_step(model_name(bundle, "fan"), {"image": "image"}, {m: m for m in masks})]
                if masks else [])
    gen_step = _step(model_name(bundle, "generator"),
                     {"image": "image", "style": "style", **{m: m for m in masks}},
                     {"translated": "translated"})
    domain = specs["mapping_network"]["inputs"][1]
    reference = dict(specs["style_encoder"]["inputs"][0], name="reference")
    sources = {
        "translate_latent": ([image, specs["mapping_network"]["inputs"][0], domain],
                             _step(model_name(bundle, "mapping_network"),
                                   {"z": "z", "domain": "domain"}, {"style": "style"})),
        "translate_reference": ([image, reference, domain],
                                _step(model_name(bundle, "style_encoder"),
                                      {"image": "reference", "domain": "domain"},
                                      {"style": "style"})),
    }
    out = {}
    for ensemble, (inputs, style_step) in sources.items():
        name = model_name(bundle, ensemble)
        out[name] = "\n".join([
            f"name: {_quote(name)}",
            'platform: "ensemble"',
            f"max_batch_size: {batching.max_batch_size}",
            "input [", ",\n".join(_tensor(s, reshape_scalars=False) for s in inputs), "]",
            "output [", _tensor(gen["outputs"][0]), "]",
            "ensemble_scheduling { step [",
            ",\n".join([style_step] + fan_step + [gen_step]),
            "] }",
            _parameters({**params, PARAM_PREFIX + "network": ensemble}),
        ]) + "\n"
    return out


# -- validation with Triton's own protobuf ---------------------------------------------------------
def parse_config(text: str, where: str = "config.pbtxt"):
    """Parse config.pbtxt text into Triton's ``ModelConfig`` message (tritonclient's copy of
    Triton's model_config.proto); a syntax or field error names the file and line."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise UserError(f"checking Triton configs needs tritonclient ({exc}); install it with "
                        "pip install 'stargan-rt[serve]'") from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise UserError(f"{where}: not a valid Triton model config: {exc}") from None


def read_repository(repo: str | os.PathLike) -> dict[str, object]:
    """{model name: ModelConfig} of every model folder in ``repo``, each config parsed and its
    name and version folder checked."""
    repo = Path(repo)
    if not repo.is_dir():
        raise UserError(f"{repo}: no such model repository; write one with "
                        "`stargan-rt export --triton DIR`")
    configs = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        path = folder / "config.pbtxt"
        if not path.is_file():
            continue  # not a model (e.g. plugins/)
        config = parse_config(path.read_text(), str(path))
        if config.name and config.name != folder.name:
            raise UserError(f"{path}: names the model {config.name!r} but lives in folder "
                            f"{folder.name!r}; Triton requires them to match")
        if config.platform != "ensemble" and not (folder / "1").is_dir():
            raise UserError(f"{folder}: no version folder 1/; re-export the repository")
        configs[folder.name] = config
    if not configs:
        raise UserError(f"{repo}: holds no models (no */config.pbtxt); write them with "
                        "`stargan-rt export --triton DIR`")
    return configs


# -- writing ---------------------------------------------------------------------------------------
def write_repository(model, repo: str | os.PathLike, target: str = "openvino",
                     precision: str = "fp32", kind: str = "python",
                     batching: Batching = Batching(), cache_dir=None, calib=None,
                     log: Log = print) -> list[str]:
    """Write (or replace) one bundle's models in ``repo``; returns the model names."""
    from stargan_rt.defaults import resolve_model

    if kind not in KINDS:
        raise UserError(f"--backend {kind}: expected one of {', '.join(KINDS)}")
    if target not in NATIVE:
        raise UserError(f"--target {target}: expected one of {', '.join(NATIVE)}")
    if kind == "python" and target == "tensorrt":
        raise UserError("--backend python serves stargan-rt's CPU engines (openvino, "
                        "onnxruntime); for TensorRT write a native repository: --backend native")
    batching.check()
    bundle = Bundle.open(resolve_model(model))
    cache = EngineCache(cache_dir)
    if kind == "native" and target == "tensorrt":
        get_backend("tensorrt").require("tensorrt")  # the plan is built here, on the GPU box
    networks = networks_for(bundle)
    graphs = prepare_graphs(bundle, target, precision, cache, "uint8", calib, networks, log)
    arch = bundle.manifest.arch
    specs = {net: io_spec(arch, net, "uint8", bundle.manifest.image_size, bundle.manifest.config,
                          len(bundle.manifest.domains)) for net in networks}
    common = {PARAM_PREFIX + "bundle_hash": bundle.content_hash,
              PARAM_PREFIX + "bundle_name": model_prefix(bundle),
              PARAM_PREFIX + "target": target, PARAM_PREFIX + "precision": precision}
    repo = Path(repo)
    _check_writable(repo)
    names = []
    for net in networks:
        name = model_name(bundle, net)
        net_precision = network_precision(net, precision, target)
        params = {**common, PARAM_PREFIX + "network": net,
                  PARAM_PREFIX + "network_precision": net_precision}
        graph = graphs.paths[net]

        def fill(folder: Path, net=net, graph=graph, params=params, net_precision=net_precision,
                 name=name) -> None:
            version = folder / "1"
            version.mkdir()
            if kind == "python":
                params = {**params, PARAM_PREFIX + "graph": _copy_graph(graph, version)}
                (version / "model.py").write_text(PYTHON_MODEL_SHIM)
                runner = ("backend", "python")
            else:
                key, value, filename = NATIVE[target]
                _write_native(target, graph, version / filename, net_precision, cache, log)
                runner = (key, value)
            (folder / "config.pbtxt").write_text(
                network_config(name, specs[net], runner, batching, params,
                               "KIND_GPU" if target == "tensorrt" else "KIND_CPU"))
        _replace_model(repo, name, fill)
        names.append(name)
        log(f"  {name}: {kind} backend, {target} {net_precision} ({graph.name})")
    if arch == "v2":
        for name, text in ensemble_configs(bundle, specs, batching, common).items():
            def fill(folder: Path, text=text) -> None:
                (folder / "1").mkdir()  # Triton wants a version folder, even an empty one
                (folder / "config.pbtxt").write_text(text)
            _replace_model(repo, name, fill)
            names.append(name)
            log(f"  {name}: ensemble")
    if kind == "native" and target == "tensorrt":
        _copy_plugins(repo, log)
    read_repository(repo)  # every config parses with Triton's own protobuf
    return names


def _check_writable(repo: Path) -> None:
    if repo.exists() and not repo.is_dir():
        raise UserError(f"--triton {repo}: is a file; give a folder for the model repository")
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--triton {repo}: cannot create the folder ({exc.strerror or exc})") \
            from None
    if not os.access(repo, os.W_OK):
        raise UserError(f"--triton {repo}: the folder is not writable")


def _replace_model(repo: Path, name: str, fill: Callable[[Path], None]) -> None:
    """Write a model folder beside its final place and swap it in: a server or a reader sees the
    old model or the new one, and a failure leaves the old one as it was."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    old = repo / f".{name}.old"
    try:
        fill(tmp)
        tmp.chmod(0o755)
        if (repo / name).exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(repo / name, old)
        os.replace(tmp, repo / name)
    except OSError as exc:
        raise UserError(f"--triton {repo}: cannot write model {name} ({exc.strerror or exc}); "
                        "nothing was changed") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _copy_graph(graph: Path, version: Path) -> str:
    """The build's graph for this network, as the model's file; returns its name."""
    if graph.suffix == ".xml":  # an OpenVINO IR (NNCF's int8): the weights file goes with it
        shutil.copyfile(graph, version / "model.xml")
        shutil.copyfile(graph.with_suffix(".bin"), version / "model.bin")
        return "model.xml"
    shutil.copyfile(graph, version / "model.onnx")
    return "model.onnx"


def _write_native(target: str, graph: Path, dest: Path, precision: str, cache: EngineCache,
                  log: Log) -> None:
    if target == "onnxruntime":
        if graph.suffix != ".onnx":
            raise UserError(f"{graph}: onnxruntime needs an ONNX graph")
        shutil.copyfile(graph, dest)
    elif target == "openvino":
        if graph.suffix == ".xml":
            shutil.copyfile(graph, dest)
            shutil.copyfile(graph.with_suffix(".bin"), dest.with_suffix(".bin"))
        else:
            ov = get_backend("openvino").require("openvino")
            # weights kept fp32: the precision the backend runs at is the device's choice
            ov.save_model(ov.convert_model(str(graph)), str(dest), compress_to_fp16=False)
    else:
        get_backend("tensorrt").compile(graph, precision, dest, log, cache)


def _copy_plugins(repo: Path, log: Log) -> None:
    from stargan_rt.backends.tensorrt import plugin_libraries

    libraries = plugin_libraries()
    if not libraries:
        log("  note: no AdaIN plugin library found (cmake -B build && cmake --build build); "
            "the plans use the unfused graph")
        return
    folder = repo / "plugins"
    folder.mkdir(exist_ok=True)
    for lib in libraries:
        shutil.copyfile(lib, folder / lib.name)
        log(f"  plugins/{lib.name}: load it with LD_PRELOAD when starting tritonserver")
