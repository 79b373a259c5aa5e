"""A tiny, deterministic *fake* insightface model pack, plus synthetic "face" images.

For the tests and the demo's --synthetic run. The two ONNX files are built with the plain
`onnx.helper` API (no downloads, well under a second, under 0.5 MB) and go through insightface's own
routing (`FaceAnalysis` -> `model_zoo.ModelRouter`), checked with insightface 0.7.3 and 2.1:

* detector: one input [1,3,H,W] and 9 outputs score/bbox/kps for strides 8/16/32 (2 anchors per
  location), so insightface builds an SCRFD with keypoints.
* recognizer: one input [N,3,112,112] and one output [N,512], so insightface builds an ArcFaceONNX.

What the fake detector "detects"
--------------------------------
A face is a solid block of one saturated primary colour - pure red, green or blue - as seen by the
network, i.e. in RGB order (insightface is fed BGR and swaps to RGB itself). One face per colour at
most; its box is the bounding box of all pixels of that colour, keypoints sit at the ArcFace
template positions inside the box, and det_score = 1 - 1/(w + h + 2) with w, h in detector-input
pixels. So the score grows with w + h, not with the area: a long thin face can outscore a larger
square one. Boxes need to contain at least one anchor centre (multiples of 8 px at det size).

What the fake recognizer computes
---------------------------------
A fixed random projection (seed 1234) of the 8x8 average-pooled 112x112 crop: deterministic, raw
(not normalised, norm ~20 for a saturated face), and different per colour (red vs green cosine is
about -0.24), so the colour is the "identity".
"""
from __future__ import annotations

import os

import numpy as np
import torch

OPSET = 17  # ORT >= 1.13 runs opset 17
IR_VERSION = 8  # ORT >= 1.10 loads IR 8
STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
# ArcFace 112x112 alignment template divided by 112: keypoint positions relative to the box.
REL_KPS = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32) / 112.0

DET_NAME = "det_fake_scrfd.onnx"
REC_NAME = "rec_fake_arcface.onnx"

# RGB float colours (ComfyUI IMAGE convention)
RED = (1.0, 0.0, 0.0)
GREEN = (0.0, 1.0, 0.0)
BLUE = (0.0, 0.0, 1.0)
BACKGROUND = (40 / 255, 40 / 255, 40 / 255)


class _Graph:
    """Collects nodes and initializers under unique names."""

    def __init__(self, prefix: str):
        self.nodes, self.inits, self.count = [], [], 0
        self.prefix = prefix

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}_{self.count}"

    def const(self, value, dtype=np.float32, hint: str = "c") -> str:
        from onnx import numpy_helper

        nm = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), nm))
        return nm

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        # Node names never start with "Sub"/"Mul": ArcFaceONNX would then skip input normalisation.
        self.nodes.append(helper.make_node(op_type, inputs, [out], name="n_" + out, **attrs))
        return out


def _finish(g: _Graph, name: str, inputs, outputs):
    import onnx
    from onnx import helper

    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.inits)
    model = helper.make_model(graph, producer_name="fake-insightface",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _colour_boxes(g: _Graph, x: str, h_i: str, w_i: str):
    """Per colour (R, G, B): scalar x1, y1, x2, y2 of its pixels and a 0/1 `present` flag."""
    from onnx import TensorProto

    i64 = np.int64
    chans = [g.op("Slice", [x, g.const([c], i64), g.const([c + 1], i64), g.const([1], i64)],
                  hint=f"ch{c}") for c in range(3)]
    hi, lo = g.const(0.25), g.const(-0.25)  # x = (v - 127.5) / 128: v > ~159.5, v < ~95.5
    xs, ys = (g.op("Cast", [g.op("Range", [g.const(0, i64), n, g.const(1, i64)])],
                   to=TensorProto.FLOAT) for n in (w_i, h_i))  # pixel coordinates [W], [H]
    big, nbig, one = g.const(1e9), g.const(-1e9), g.const(1.0)
    boxes = []
    for c in range(3):
        o1, o2 = [o for o in range(3) if o != c]
        mask = g.op("And", [g.op("Greater", [chans[c], hi]),
                            g.op("And", [g.op("Less", [chans[o1], lo]),
                                         g.op("Less", [chans[o2], lo])])])
        mf = g.op("Cast", [mask], to=TensorProto.FLOAT)  # [1,1,H,W]
        col = g.op("ReduceMax", [mf], axes=[0, 1, 2], keepdims=0)  # [W]
        row = g.op("ReduceMax", [mf], axes=[0, 1, 3], keepdims=0)  # [H]
        colb = g.op("Greater", [col, g.const(0.5)])
        rowb = g.op("Greater", [row, g.const(0.5)])
        x1 = g.op("ReduceMin", [g.op("Where", [colb, xs, big])], keepdims=0)
        x2 = g.op("ReduceMax", [g.op("Where", [colb, g.op("Add", [xs, one]), nbig])], keepdims=0)
        y1 = g.op("ReduceMin", [g.op("Where", [rowb, ys, big])], keepdims=0)
        y2 = g.op("ReduceMax", [g.op("Where", [rowb, g.op("Add", [ys, one]), nbig])], keepdims=0)
        present = g.op("ReduceMax", [col], keepdims=0)  # 0. or 1.
        boxes.append((x1, y1, x2, y2, present))
    return boxes


def _stride_outputs(g: _Graph, boxes, h_i: str, w_i: str, stride: int):
    """Score [N,1], bbox distances [N,4] and keypoint offsets [N,10] for one stride."""
    from onnx import TensorProto

    i64 = np.int64
    one = g.const(1.0)
    s_i = g.const(stride, i64)
    sf = g.const(float(stride))
    grid = [g.op("Mul", [g.op("Cast", [g.op("Range", [g.const(0, i64), g.op("Div", [n, s_i]),
                                                      g.const(1, i64)])],
                              to=TensorProto.FLOAT), sf]) for n in (w_i, h_i)]
    ax, ay = grid  # anchor centres, [gw] and [gh]
    ay2 = g.op("Unsqueeze", [ay, g.const([1], i64)])  # [gh,1]
    ax2 = g.op("Unsqueeze", [ax, g.const([0], i64)])  # [1,gw]
    zero = g.op("Mul", [ax2, g.op("Mul", [ay2, g.const(0.0)])])  # [gh,gw]
    anc_x, anc_y = g.op("Add", [zero, ax2]), g.op("Add", [zero, ay2])
    score = dist = taken = None
    for (x1, y1, x2, y2, present) in boxes:
        inside = g.op("And", [
            g.op("And", [g.op("GreaterOrEqual", [anc_x, x1]), g.op("Less", [anc_x, x2])]),
            g.op("And", [g.op("GreaterOrEqual", [anc_y, y1]), g.op("Less", [anc_y, y2])])])
        inside_f = g.op("Mul", [g.op("Cast", [inside], to=TensorProto.FLOAT), present])
        if taken is not None:  # the first colour wins where boxes overlap
            inside_f = g.op("Mul", [inside_f, g.op("Sub", [one, taken])])
        w, h = g.op("Sub", [x2, x1]), g.op("Sub", [y2, y1])
        conf = g.op("Sub", [one, g.op("Div", [one, g.op("Add", [g.op("Add", [w, h]),
                                                               g.const(2.0)])])])
        sc = g.op("Mul", [inside_f, g.op("Max", [conf, g.const(0.0)])])
        comps = [g.op("Sub", [anc_x, x1]), g.op("Sub", [anc_y, y1]),
                 g.op("Sub", [x2, anc_x]), g.op("Sub", [y2, anc_y])]
        for k in range(5):
            kx = g.op("Add", [x1, g.op("Mul", [w, g.const(float(REL_KPS[k, 0]))])])
            ky = g.op("Add", [y1, g.op("Mul", [h, g.const(float(REL_KPS[k, 1]))])])
            comps += [g.op("Sub", [kx, anc_x]), g.op("Sub", [ky, anc_y])]
        comps = [g.op("Unsqueeze", [c, g.const([2], i64)]) for c in comps]
        d = g.op("Div", [g.op("Concat", comps, axis=2), sf])  # [gh,gw,14] in stride units
        d = g.op("Mul", [d, g.op("Unsqueeze", [inside_f, g.const([2], i64)])])
        score = sc if score is None else g.op("Add", [score, sc])
        dist = d if dist is None else g.op("Add", [dist, d])
        taken = inside_f if taken is None else g.op("Add", [taken, inside_f])
    # Same prediction for both anchors of a location, flattened row-major (y, x, anchor).
    sc3 = g.op("Concat", [g.op("Unsqueeze", [score, g.const([2], i64)])] * NUM_ANCHORS, axis=2)
    d4 = g.op("Concat", [g.op("Unsqueeze", [dist, g.const([2], i64)])] * NUM_ANCHORS, axis=2)
    d_flat = g.op("Reshape", [d4, g.const([-1, 14], i64)])  # [N,14]
    scores = g.op("Reshape", [sc3, g.const([-1, 1], i64)])  # [N,1]
    bbox = g.op("Slice", [d_flat, g.const([0], i64), g.const([4], i64), g.const([1], i64)])
    kps = g.op("Slice", [d_flat, g.const([4], i64), g.const([14], i64), g.const([1], i64)])
    return scores, bbox, kps


def build_detector():
    """SCRFD-shaped detector (9 outputs) that finds saturated red/green/blue blocks."""
    from onnx import TensorProto, helper

    g = _Graph("d_")
    x = "input.1"  # same input name as real SCRFD exports
    shape = g.op("Shape", [x])
    h_i = g.op("Gather", [shape, g.const(2, np.int64)], axis=0)
    w_i = g.op("Gather", [shape, g.const(3, np.int64)], axis=0)
    boxes = _colour_boxes(g, x, h_i, w_i)
    per_stride = {s: _stride_outputs(g, boxes, h_i, w_i, s) for s in STRIDES}
    outputs = []
    for k, (kind, width) in enumerate((("score", 1), ("bbox", 4), ("kps", 10))):
        for s in STRIDES:
            name = f"{kind}_{s}"
            g.nodes.append(helper.make_node("Identity", [per_stride[s][k]], [name],
                                            name=f"n_out_{name}"))
            # rank-2 outputs [N, 1|4|10] like real non-batched SCRFD exports
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                         [f"n{s}", width]))
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, "height", "width"])
    return _finish(g, "fake_scrfd_kps", [inp], outputs)


def build_recognizer(seed: int = 1234, dim: int = 512):
    """ArcFace-shaped recognizer: [N,3,112,112] -> raw [N,dim] embedding."""
    from onnx import TensorProto, helper

    g = _Graph("r_")
    x = "input.1"
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((192, dim)) / np.sqrt(192.0)).astype(np.float32)
    pooled = g.op("AveragePool", [x], hint="pool", kernel_shape=[14, 14], strides=[14, 14])
    flat = g.op("Flatten", [pooled], hint="flatten", axis=1)  # [N,192]
    proj = g.op("MatMul", [flat, g.const(weight, hint="proj_w")], hint="proj")  # [N,dim]
    g.nodes.append(helper.make_node("Identity", [proj], ["embedding"], name="n_out_embedding"))
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", 3, 112, 112])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])
    return _finish(g, "fake_arcface", [inp], [out])


_CACHE: dict[str, bytes] = {}


def write_pack(pack_dir: str | os.PathLike, det_name: str = DET_NAME,
               rec_name: str = REC_NAME) -> tuple[str, str]:
    """Write the fake detector + recognizer into `pack_dir` (created); return both paths."""
    if not _CACHE:  # building takes a few hundred ms; the bytes never change
        _CACHE["det"] = build_detector().SerializeToString()
        _CACHE["rec"] = build_recognizer().SerializeToString()
    os.makedirs(pack_dir, exist_ok=True)
    paths = (os.path.join(pack_dir, det_name), os.path.join(pack_dir, rec_name))
    for path, key in zip(paths, ("det", "rec"), strict=True):
        with open(path, "wb") as fh:
            fh.write(_CACHE[key])
    return paths


# ---- synthetic ComfyUI-style images -------------------------------------------------------------

def blank_image(h: int = 480, w: int = 640, bg=BACKGROUND) -> torch.Tensor:
    """[H,W,3] float32 RGB image in 0..1 with no face."""
    img = torch.empty(h, w, 3, dtype=torch.float32)
    img[:] = torch.tensor(bg, dtype=torch.float32)
    return img


def add_face(image: torch.Tensor, box=(200, 120, 328, 248), color=RED,
             features: bool = True) -> torch.Tensor:
    """Paint a solid `color` block at box (x1, y1, x2, y2) in place, with dark eyes and nose."""
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = torch.tensor(color, dtype=image.dtype)
    bw, bh = x2 - x1, y2 - y1
    if features and min(bw, bh) >= 32:
        r = max(1, bw // 16)
        for rx, ry in REL_KPS[:3]:  # eyes + nose, inside the block so the box is unchanged
            cx, cy = int(x1 + rx * bw), int(y1 + ry * bh)
            image[cy - r:cy + r, cx - r:cx + r] = 20 / 255
    return image


def synthetic_face(h: int = 480, w: int = 640, box=(200, 120, 328, 248), color=RED,
                   bg=BACKGROUND) -> torch.Tensor:
    """[H,W,3] float32 RGB image (like one ComfyUI IMAGE) with one `color` face at `box`."""
    return add_face(blank_image(h, w, bg), box, color)


def save_png(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write one [H,W,3] 0..1 image as an 8-bit PNG, rounded to the nearest level (so a photo
    read back by LoadImage is within half a level of the tensor it was made from)."""
    from PIL import Image

    Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(path)
