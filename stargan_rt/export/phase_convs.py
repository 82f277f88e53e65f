"""Stride-2 transposed convolutions as four ordinary convolutions and a DepthToSpace.

ONNX Runtime's CPU provider has no integer ConvTranspose: in a quantized graph it dequantizes,
runs a float ConvTranspose (col2im, slow) and quantizes again. Measured on the official-size
StarGAN v1 (128 px) with ONNX Runtime's profiler, its two upsampling ConvTransposes took 28 % of
the int8 graph's time. The same operation is four small convolutions, one per output phase
(even / odd row, even / odd column), which ONNX Runtime runs as integer QLinearConv:

    y[o, 2m + ry, 2n + rx] = sum_{i, ky, kx} x[i, m + dy, n + dx] * W[i, o, ky, kx]
    with dy = (ry + pad - ky) / 2, dx = (rx + pad - kx) / 2, over the taps where both are whole.

For kernel 4, pad 1 each phase has 2 x 2 taps (offsets -1..0 or 0..1): a 2 x 2 convolution with
one-sided padding, the same multiply-adds as the transposed convolution. The four results are
concatenated phase by phase and DepthToSpace (DCR) interleaves them into the 2x larger map.
Exact up to float summation order. Only stride 2, group 1, no dilation, output twice the
input size (kernel - 2 * pad = 2), no output_padding / output_shape are rewritten; others stay.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _phase_taps(kernel: int, pad: int, phase: int) -> list[tuple[int, int]]:
    """[(input offset, kernel index)] of one output phase, by increasing offset."""
    return sorted(((phase + pad - k) // 2, k) for k in range(kernel) if (phase + pad - k) % 2 == 0)


def _rewritable(node: onnx.NodeProto, weight: np.ndarray | None) -> bool:
    if node.op_type != "ConvTranspose" or weight is None or weight.ndim != 4:
        return False
    a = _attrs(node)
    kh, kw = weight.shape[2:]
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if list(a.get("strides", [1, 1])) != [2, 2] or a.get("group", 1) != 1 or \
            any(d != 1 for d in a.get("dilations", [1, 1])) or \
            any(p != 0 for p in a.get("output_padding", [0, 0])) or "output_shape" in a or \
            a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        return False
    if kh - 2 * pads[0] != 2 or kw - 2 * pads[1] != 2:
        return False  # output not exactly twice the input
    # every phase needs the same number of taps for one DepthToSpace
    counts = {len(_phase_taps(kh, pads[0], r)) for r in (0, 1)} | \
             {len(_phase_taps(kw, pads[1], r)) for r in (0, 1)}
    return len(counts) == 1 and 0 not in counts


def split_transposed_convs(model: onnx.ModelProto) -> int:
    """Rewrite the model's stride-2 ConvTranspose nodes in place (see the module doc); returns
    how many were rewritten."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    new_nodes, replaced_weights, rewritten = [], set(), 0
    for index, node in enumerate(graph.node):
        weight = numpy_helper.to_array(inits[node.input[1]]) \
            if len(node.input) > 1 and node.input[1] in inits else None
        if not _rewritable(node, weight):
            new_nodes.append(node)
            continue
        pads = list(_attrs(node).get("pads", [0, 0, 0, 0]))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        base = node.name or f"ConvTranspose_{index}"
        phase_outputs = []
        for ry in (0, 1):
            rows = _phase_taps(weight.shape[2], pads[0], ry)
            for rx in (0, 1):
                cols = _phase_taps(weight.shape[3], pads[1], rx)
                # Conv weight (out, in, kh, kw) from ConvTranspose weight (in, out, kh, kw)
                w = weight[:, :, [k for _, k in rows]][:, :, :, [k for _, k in cols]]
                w = np.ascontiguousarray(w.transpose(1, 0, 2, 3))
                name = f"{base}_phase{ry}{rx}"
                tensor = numpy_helper.from_array(w.astype(weight.dtype), f"{name}_W")
                graph.initializer.append(tensor)
                out = f"{name}_out"
                conv_pads = [-rows[0][0], -cols[0][0], rows[-1][0], cols[-1][0]]
                inputs = [node.input[0], tensor.name] + ([bias] if bias else [])
                new_nodes.append(helper.make_node(
                    "Conv", inputs, [out], name=name, kernel_shape=[len(rows), len(cols)],
                    pads=conv_pads, strides=[1, 1]))
                phase_outputs.append(out)
        new_nodes.append(helper.make_node("Concat", phase_outputs, [f"{base}_phases"],
                                          name=f"{base}_concat", axis=1))
        new_nodes.append(helper.make_node("DepthToSpace", [f"{base}_phases"], [node.output[0]],
                                          name=f"{base}_interleave", blocksize=2, mode="DCR"))
        replaced_weights.add(node.input[1])
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(new_nodes)
        used = {name for n in graph.node for name in n.input}
        keep = [t for t in graph.initializer if t.name in used or t.name not in replaced_weights]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return rewritten
