"""Operation count of an exported graph: multiply-accumulates of its Conv, ConvTranspose, Gemm and
MatMul nodes for one sample, from ONNX shape inference (the rest is noise next to them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def _fixed_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def count_macs(onnx_path: str | Path) -> int:
    """Multiply-accumulates per sample (batch 1) of the graph's weighted layers."""
    model = _fixed_batch(onnx.load(str(onnx_path)))
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Conv", "ConvTranspose"):
            weight, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if weight is None or out is None:
                continue
            kernel = int(np.prod(weight[2:]))
            # groups are in the weights: Conv (Cout, Cin/g, k..), ConvTranspose (Cin, Cout/g, k..)
            if node.op_type == "Conv":  # each output reads Cin/g * k inputs
                total += int(np.prod(out)) * weight[1] * kernel
            else:  # each input scatters into Cout/g * k outputs
                inp = shapes.get(node.input[0])
                if inp is None:
                    continue
                total += int(np.prod(inp)) * weight[1] * kernel
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a is None or out is None:
                continue
            inner = a[0] if node.op_type == "Gemm" and attrs.get("transA", 0) else a[-1]
            total += int(np.prod(out)) * inner
    return total
