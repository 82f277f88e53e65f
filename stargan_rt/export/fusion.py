"""AdaIN fusion: InstanceNormalization (no affine) -> * (1 + gamma) -> + beta [-> LeakyRelu]
becomes one ``AdaIN`` node that TensorRT's ONNX parser hands to the AdaIN plugin.

The exported v2 generator computes every AdaIN as (TorchScript exporter, after onnxsim)::

    Gemm(style) -> Unsqueeze[2,3] -> Slice (gamma, [N,C,1,1]) -> Add(gamma, 1) ---+
                                  -> Slice (beta,  [N,C,1,1]) -----------------+  |
    x -> InstanceNormalization(scale=1, bias=0) ---------------------------- Mul(+, IN)
                                                                    Add(Mul, beta) -> LeakyRelu

The pass matches that dataflow (either operand order, constants given as initializers or Constant
nodes) and replaces it by::

    gamma2 = Flatten(gamma, axis=1)          # [N, C]
    beta2  = Flatten(beta,  axis=1)          # [N, C]
    y = trt.plugins::AdaIN(x, gamma2, beta2; epsilon, negative_slope, has_activation,
                           plugin_version="1", plugin_namespace="")

Plugin interface (for the CUDA/TensorRT plugin, engines/): name ``AdaIN``, version ``"1"``,
namespace ``""`` (the parser matches op_type = plugin name; other attributes become plugin
fields). Inputs x float [N,C,H,W], gamma float [N,C], beta float [N,C]; output [N,C,H,W], same
dtype as x. y = (1 + gamma) * (x - mean) / sqrt(var + epsilon) + beta per sample and channel (mean
and biased variance over H, W), then LeakyReLU(negative_slope) when has_activation = 1. The node's
domain is ``trt.plugins`` (the domain ONNX Runtime's TensorRT provider and ModelOpt use for
TensorRT plugins; TensorRT's parser itself dispatches on op_type only).

``adain_reference`` is the numpy definition of the node; ``run_reference`` runs a fused graph with
``onnx.reference`` and that definition, so fused == unfused can be checked on any CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stargan_rt.export.contract import ADAIN_PLUGIN
from stargan_rt.export.graph import prune_unused
from stargan_rt.export.onnx_io import get_metadata, load_model, save_model, set_metadata

ADAIN_OP = ADAIN_PLUGIN["op_type"]
ADAIN_DOMAIN = ADAIN_PLUGIN["domain"]
PLUGIN_VERSION = ADAIN_PLUGIN["plugin_version"]
PLUGIN_NAMESPACE = ADAIN_PLUGIN["plugin_namespace"]


def adain_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, epsilon: float = 1e-5,
                    negative_slope: float = 0.2, has_activation: int = 1) -> np.ndarray:
    """Numpy definition of the AdaIN node (computed in float64, returned in x's dtype)."""
    xd = x.astype(np.float64)
    mean = xd.mean(axis=(2, 3), keepdims=True)
    var = xd.var(axis=(2, 3), keepdims=True)
    y = (xd - mean) / np.sqrt(var + epsilon)
    y = (1.0 + gamma.astype(np.float64)[:, :, None, None]) * y + beta.astype(np.float64)[:, :, None, None]
    if has_activation:
        y = np.where(y >= 0, y, y * negative_slope)
    return y.astype(x.dtype)


class _Graph:
    """Producer / consumer / constant lookups over a GraphProto."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.initializers = {i.name: i for i in graph.initializer}

    def const(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
        return None

    def sole_consumer(self, name: str):
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs:
            return None
        return users[0]


def _rank4_channel_vector(shapes: dict, name: str) -> bool:
    """True when shape inference says ``name`` is [N, C, 1, 1]."""
    dims = shapes.get(name)
    if dims is None or len(dims) != 4:
        return False
    return all(d.HasField("dim_value") and d.dim_value == 1 for d in dims[2:])


def _other(node, name: str) -> str:
    a, b = node.input
    return b if a == name else a


def _find_adain(g: _Graph, shapes: dict) -> list[dict]:
    matches = []
    for norm in g.graph.node:
        if norm.op_type != "InstanceNormalization":
            continue
        scale, bias = g.const(norm.input[1]), g.const(norm.input[2])
        if scale is None or bias is None or not (np.all(scale == 1) and np.all(bias == 0)):
            continue
        mul = g.sole_consumer(norm.output[0])
        if mul is None or mul.op_type != "Mul":
            continue
        scale_name = _other(mul, norm.output[0])
        one_plus = g.producer.get(scale_name)
        if one_plus is None or one_plus.op_type != "Add" or g.sole_consumer(scale_name) is not mul:
            continue
        gamma = None
        for i, name in enumerate(one_plus.input):
            value = g.const(name)
            if value is not None and value.size >= 1 and np.all(value == 1):
                gamma = one_plus.input[1 - i]
        if gamma is None or g.const(gamma) is not None or not _rank4_channel_vector(shapes, gamma):
            continue
        add = g.sole_consumer(mul.output[0])
        if add is None or add.op_type != "Add":
            continue
        beta = _other(add, mul.output[0])
        if g.const(beta) is not None or not _rank4_channel_vector(shapes, beta):
            continue
        act = g.sole_consumer(add.output[0])
        slope = None
        if act is not None and act.op_type == "LeakyRelu":
            slope = next((a.f for a in act.attribute if a.name == "alpha"), 0.01)
        elif act is not None and act.op_type == "Relu":
            slope = 0.0
        epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
        remove = [norm, one_plus, mul, add] + ([act] if slope is not None else [])
        out = (act if slope is not None else add).output[0]
        matches.append({"x": norm.input[0], "gamma": gamma, "beta": beta, "out": out,
                        "epsilon": epsilon, "slope": slope, "remove": remove})
    return matches


def fuse_adain_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Return (fused copy, number of AdaIN nodes). The input model is not modified."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
            inferred.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = list(value.type.tensor_type.shape.dim)
    g = _Graph(model.graph)
    matches = _find_adain(g, shapes)
    if not matches:
        return model, 0
    removed = {id(n) for m in matches for n in m["remove"]}
    replacement: dict[int, list] = {}  # index of the InstanceNormalization node -> new nodes
    for k, m in enumerate(matches):
        gamma2, beta2 = f"adain_{k}_gamma", f"adain_{k}_beta"
        nodes = [
            helper.make_node("Flatten", [m["gamma"]], [gamma2], name=f"adain_{k}/flatten_gamma",
                             axis=1),
            helper.make_node("Flatten", [m["beta"]], [beta2], name=f"adain_{k}/flatten_beta",
                             axis=1),
            helper.make_node(
                ADAIN_OP, [m["x"], gamma2, beta2], [m["out"]], name=f"adain_{k}/AdaIN",
                domain=ADAIN_DOMAIN, epsilon=float(m["epsilon"]),
                negative_slope=float(m["slope"] if m["slope"] is not None else 1.0),
                has_activation=int(m["slope"] is not None), plugin_version=PLUGIN_VERSION,
                plugin_namespace=PLUGIN_NAMESPACE),
        ]
        replacement[id(m["remove"][0])] = nodes
    new_nodes = []
    # Place the fused node where the last removed node of its pattern was, so every input
    # (x, gamma, beta) is already computed: walk in order and emit at the pattern's last node.
    last_of = {id(m["remove"][-1]): id(m["remove"][0]) for m in matches}
    for node in model.graph.node:
        if id(node) in last_of:
            new_nodes.extend(replacement[last_of[id(node)]])
        elif id(node) not in removed:
            new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    prune_unused(model)
    if not any(op.domain == ADAIN_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ADAIN_DOMAIN, 1))
    set_metadata(model, adain_fused="1")
    return model, len(matches)


def fuse_adain(onnx_path_in: str | os.PathLike, onnx_path_out: str | os.PathLike) -> int:
    """Fuse every AdaIN of an ONNX file into AdaIN plugin nodes; returns how many were fused.

    The output is written (atomically) even when nothing matched, so callers can always use it.
    """
    model = load_model(onnx_path_in)
    fused, count = fuse_adain_model(model)
    onnx.checker.check_model(fused)
    save_model(fused, onnx_path_out)
    return count


def count_adain(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == ADAIN_OP)


def is_fused(model: onnx.ModelProto) -> bool:
    return get_metadata(model).get("adain_fused") == "1" or count_adain(model) > 0


# -- running fused graphs on a CPU -----------------------------------------------------------

def _reference_op_class():
    from onnx.reference.op_run import OpRun

    class AdaIN(OpRun):
        op_domain = ADAIN_DOMAIN

        def _run(self, x, gamma, beta, epsilon=1e-5, negative_slope=0.2, has_activation=1,
                 plugin_version="1", plugin_namespace=""):
            return (adain_reference(x, gamma, beta, epsilon, negative_slope, has_activation),)

    return AdaIN


def _opset_for_reference(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx.reference implements QuantizeLinear / DequantizeLinear from opset 19 only; their
    opset-13 semantics are the same, so a Q/DQ graph of opset 17 runs with its import raised to
    19 (the other ops our graphs use are unchanged between 17 and 19; Reduce* are not, so
    graphs with those are refused)."""
    ops = {n.op_type for n in model.graph.node}
    default = next((o for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if default is None or default.version >= 19 or not ops & {"QuantizeLinear",
                                                              "DequantizeLinear"}:
        return model
    if any(op.startswith("Reduce") for op in ops):
        raise ValueError("cannot run an opset < 19 Q/DQ graph with Reduce ops in onnx.reference")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 19
    return model


def run_reference(model: onnx.ModelProto | str | os.PathLike, feeds: dict) -> list[np.ndarray]:
    """Run a (fused or plain) graph with onnx.reference and the numpy AdaIN definition.

    Slow (pure numpy); meant for small test models.
    """
    from onnx.reference import ReferenceEvaluator

    if not isinstance(model, onnx.ModelProto):
        model = load_model(Path(model))
    model = _opset_for_reference(model)
    session = ReferenceEvaluator(model, new_ops=[_reference_op_class()])
    return session.run(None, feeds)
