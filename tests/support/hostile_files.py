"""A catalogue of hostile and broken inputs for every loader of the pack (test-only).

Each `Case` writes one bad PhotoMaker file, identity file or InsightFace model folder, and says
which node must refuse it, naming which input, with what message. tests/test_reliability.py runs
every case through the real engine (and a subset through the real server over HTTP) and checks
that the next good prompt still runs.

Nothing here imports photomaker_core: the bad files are written from the formats themselves
(safetensors: 8-byte little-endian header length + JSON header + data; torch.save zip pickles;
raw pickle streams; ONNX protobufs).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from synthetic import fake_insightface, pm_weights

# The message of every refusal must also say what to do; one of these words marks the fix.
FIX_WORDS = ("download", "use ", "put ", "move", "save the identity again", "save it again", "save one",
             "load the matching", "connect", "replace", "extract", "install", "choose", "encode every",
             "same photomaker file", "put only")

PHOTOMAKER, IDENTITY, INSIGHTFACE, VERSION = "photomaker", "identity", "insightface", "version"


@dataclass
class Ctx:
    """What the writers need: the payload marker and seeded tiny weights."""

    marker: Path
    enc: dict = field(default_factory=dict)  # version -> canonical tiny encoder state dict
    lora: dict | None = None

    @classmethod
    def make(cls, marker: Path) -> "Ctx":
        return cls(marker=marker,
                   enc={"v1": pm_weights.make_encoder_state_dict("v1", "tiny", seed=21),
                        "v2": pm_weights.make_encoder_state_dict("v2", "tiny", seed=22)},
                   lora=pm_weights.make_lora_state_dict("tiny", seed=23))


@dataclass(frozen=True)
class Case:
    id: str
    loader: str  # PHOTOMAKER | IDENTITY | INSIGHTFACE | VERSION
    name: str  # file name in the loader's folder, or the InsightFace pack folder name
    write: Callable[[Path, Ctx], None]  # write(folder, ctx): creates `name` inside `folder`
    expect: str  # regex (case-insensitive) the error message must match
    node: str = ""  # node class that must report it (default: the loader's node)
    input: str = ""  # the input the message must name (default: the loader's file input)
    payload: bool = False  # a code payload: the marker file must never appear

    @property
    def node_type(self) -> str:
        return self.node or {PHOTOMAKER: "StackedIDLoader", IDENTITY: "StackedIDLoad",
                             INSIGHTFACE: "StackedIDFaceAnalysisLoader"}[self.loader]

    @property
    def input_name(self) -> str:
        return self.input or {PHOTOMAKER: "photomaker_file", IDENTITY: "identity_file",
                              INSIGHTFACE: "model_pack"}[self.loader]


# ------------------------------------------------------------------------------ raw writers

def _payload_command(marker: Path) -> str:
    return pm_weights.marker_command(marker)


class _ExecPayload:
    """Unpickling runs Python code through builtins.exec (another classic payload)."""

    def __init__(self, marker: Path):
        self.code = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('pwned')"

    def __reduce__(self):
        import builtins

        return (builtins.exec, (self.code,))


def write_exec_pickle(path: Path, marker: Path) -> None:
    torch.save({"id_encoder": {"fuse_module.layer_norm.weight": _ExecPayload(marker)}}, str(path))


def write_proto0_system_pickle(path: Path, marker: Path) -> None:
    """A hand-written protocol-0 pickle: GLOBAL os.system, call it with the command."""
    cmd = _payload_command(marker).replace("\\", "\\\\").replace("'", "\\'")
    path.write_bytes(b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR.")


def write_safetensors_raw(path: Path, header: bytes, data: bytes = b"", declared: int | None = None) -> None:
    n = len(header) if declared is None else declared
    path.write_bytes(struct.pack("<Q", n) + header + data)


def write_safetensors_offsets_out_of_range(path: Path) -> None:
    header = json.dumps({"id_encoder.vision_model.embeddings.class_embedding":
                         {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}).encode()
    write_safetensors_raw(path, header, b"\0" * 64)


def write_random(path: Path, n: int = 8192, seed: int = 0) -> None:
    pm_weights.write_random_bytes(path, n, seed)


def _truncated_copy(path: Path, write_valid: Callable[[Path], None], fraction: float) -> None:
    tmp = path.with_name(path.name + ".full.tmp")
    write_valid(tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    path.write_bytes(data[: max(1, int(len(data) * fraction))])


def _with(sd: dict, key: str, value: torch.Tensor) -> dict:
    out = dict(sd)
    out[key] = value
    return out


def _poison(sd: dict, key: str, value: float) -> dict:
    t = sd[key].clone()
    t.view(-1)[t.numel() // 2] = value
    return _with(sd, key, t)


# ------------------------------------------------------------------------------ identity files

def save_identity_file(path: Path, tokens: torch.Tensor, version: str | None = "v1", weights=None,
                       arcface=None, meta: dict | None = None) -> None:
    """An identity file in the pack's documented format (safetensors + metadata), written by hand."""
    from safetensors.torch import save_file

    tensors = {"tokens": tokens.contiguous()}
    if weights is not None:
        tensors["weights"] = weights.contiguous()
    if arcface is not None:
        tensors["arcface"] = arcface.contiguous()
    metadata = {"format": "photomaker-identity/1", "image_count": str(tokens.shape[0])}
    if version is not None:
        metadata["version"] = version
    metadata.update(meta or {})
    save_file(tensors, str(path), metadata=metadata)


def valid_identity(path: Path, version: str = "v1", n: int = 2, seed: int = 0) -> None:
    k = 1 if version == "v1" else 2
    g = torch.Generator().manual_seed(seed)
    save_identity_file(path, torch.randn(n, k, 2048, generator=g), version, weights=torch.ones(n))


# ------------------------------------------------------------------------------ the catalogue

def _pm(id_, name, write, expect, **kw) -> Case:
    return Case(id_, PHOTOMAKER, name, write, expect, **kw)


def _id(id_, name, write, expect, **kw) -> Case:
    return Case(id_, IDENTITY, name, write, expect, **kw)


def _if(id_, name, write, expect, **kw) -> Case:
    return Case(id_, INSIGHTFACE, name, write, expect, **kw)


UNREADABLE_ST = r"not a valid safetensors"
UNREADABLE_BIN = r"could not be read|refused"
UNREADABLE_ID = r"not a readable identity file"


def _v1_bin(ctx):
    return lambda p: pm_weights.write_nested_bin(p, ctx.enc["v1"], ctx.lora)


def _v2_st(ctx):
    return lambda p: pm_weights.write_flat_safetensors(p, ctx.enc["v2"], ctx.lora)


PHOTOMAKER_CASES = [
    # code payloads (the released files are pickles: the most likely attack)
    _pm("pickle-os-system-zip", "rel-evil-zip.bin",
        lambda d, c: pm_weights.write_malicious_pickle(d / "rel-evil-zip.bin", c.marker, style="torch"),
        UNREADABLE_BIN, payload=True),
    _pm("pickle-os-system-raw", "rel-evil-raw.bin",
        lambda d, c: pm_weights.write_malicious_pickle(d / "rel-evil-raw.bin", c.marker, style="raw"),
        UNREADABLE_BIN, payload=True),
    _pm("pickle-proto0-global", "rel-evil-proto0.ckpt",
        lambda d, c: write_proto0_system_pickle(d / "rel-evil-proto0.ckpt", c.marker), UNREADABLE_BIN,
        payload=True),
    _pm("pickle-builtins-exec", "rel-evil-exec.pth",
        lambda d, c: write_exec_pickle(d / "rel-evil-exec.pth", c.marker), UNREADABLE_BIN, payload=True),
    _pm("pickle-named-safetensors", "rel-evil-renamed.safetensors",
        lambda d, c: pm_weights.write_malicious_pickle(d / "rel-evil-renamed.safetensors", c.marker),
        UNREADABLE_ST, payload=True),
    # broken containers
    _pm("zero-byte-bin", "rel-empty.bin", lambda d, c: pm_weights.write_zero_byte(d / "rel-empty.bin"),
        r"empty \(0 bytes\)"),
    _pm("zero-byte-safetensors", "rel-empty.safetensors",
        lambda d, c: pm_weights.write_zero_byte(d / "rel-empty.safetensors"), r"empty \(0 bytes\)"),
    _pm("truncated-bin", "rel-trunc.bin", lambda d, c: _truncated_copy(d / "rel-trunc.bin", _v1_bin(c), 0.5),
        UNREADABLE_BIN),
    _pm("truncated-safetensors", "rel-trunc.safetensors",
        lambda d, c: _truncated_copy(d / "rel-trunc.safetensors", _v2_st(c), 0.5), UNREADABLE_ST),
    _pm("truncated-in-header", "rel-trunc-header.safetensors",
        lambda d, c: _truncated_copy(d / "rel-trunc-header.safetensors", _v2_st(c), 0.0005), UNREADABLE_ST),
    _pm("random-bytes-bin", "rel-random.bin", lambda d, c: write_random(d / "rel-random.bin", seed=1),
        UNREADABLE_BIN),
    _pm("random-bytes-safetensors", "rel-random.safetensors",
        lambda d, c: write_random(d / "rel-random.safetensors", seed=2), UNREADABLE_ST),
    _pm("safetensors-corrupt-header", "rel-badjson.safetensors",
        lambda d, c: write_safetensors_raw(d / "rel-badjson.safetensors",
                                           b'{"id_encoder.x": {"dtype": "F32", [}'),
        UNREADABLE_ST),
    _pm("safetensors-offsets-out-of-range", "rel-offsets.safetensors",
        lambda d, c: write_safetensors_offsets_out_of_range(d / "rel-offsets.safetensors"), UNREADABLE_ST),
    _pm("safetensors-huge-header", "rel-hugeheader.safetensors",
        lambda d, c: write_safetensors_raw(d / "rel-hugeheader.safetensors", b"{}", declared=1 << 62),
        UNREADABLE_ST),
    _pm("safetensors-header-past-eof", "rel-header-eof.safetensors",
        lambda d, c: write_safetensors_raw(d / "rel-header-eof.safetensors", b"{}", declared=50_000_000),
        UNREADABLE_ST),
    # real keys, wrong shapes
    _pm("shape-transposed-fuse", "rel-shape-fuse.safetensors",
        lambda d, c: pm_weights.write_flat_safetensors(d / "rel-shape-fuse.safetensors", _with(
            c.enc["v1"], "fuse_module.mlp1.fc1.weight",
            c.enc["v1"]["fuse_module.mlp1.fc1.weight"].t().contiguous()),
            c.lora), r"shape"),
    _pm("shape-scalar-class-embedding", "rel-shape-scalar.safetensors",
        lambda d, c: pm_weights.write_flat_safetensors(d / "rel-shape-scalar.safetensors", _with(
            c.enc["v2"], "vision_model.embeddings.class_embedding", torch.tensor(0.5)), c.lora), r"shape"),
    _pm("shape-empty-position-embedding", "rel-shape-pos.bin",
        lambda d, c: pm_weights.write_nested_bin(d / "rel-shape-pos.bin", _with(
            c.enc["v1"], "vision_model.embeddings.position_embedding.weight", torch.zeros(0, 128)), c.lora),
        r"shape|geometry"),
    _pm("shape-lora-up", "rel-shape-lora.safetensors",
        lambda d, c: pm_weights.write_flat_safetensors(d / "rel-shape-lora.safetensors", c.enc["v1"], _with(
            c.lora, next(k for k in c.lora if k.endswith("to_k_lora.up.weight")),
            torch.zeros(96, pm_weights.LORA_RANK["tiny"]))), r"does not fit"),
    # non-finite weights
    _pm("nan-encoder", "rel-nan.safetensors",
        lambda d, c: pm_weights.write_flat_safetensors(d / "rel-nan.safetensors", _poison(
            c.enc["v2"], "fuse_module.mlp2.fc1.weight", float("nan")), c.lora), r"NaN or infinite"),
    _pm("inf-encoder-bin", "rel-inf.bin",
        lambda d, c: pm_weights.write_nested_bin(d / "rel-inf.bin", _poison(
            c.enc["v1"], "vision_model.encoder.layers.1.mlp.fc2.weight", float("inf")), c.lora),
        r"NaN or infinite"),
    _pm("neg-inf-lora", "rel-inf-lora.safetensors",
        lambda d, c: pm_weights.write_flat_safetensors(d / "rel-inf-lora.safetensors", c.enc["v1"], _poison(
            c.lora, next(iter(c.lora)), float("-inf"))), r"NaN or infinite"),
    # other models' files in the wrong folder
    _pm("sdxl-lora", "rel-style-lora.safetensors",
        lambda d, c: pm_weights.save_tensors(d / "rel-style-lora.safetensors",
                                             pm_weights.make_generic_sdxl_lora()),
        r"LoRA"),
    _pm("clip-vision", "rel-clip-vision.safetensors",
        lambda d, c: pm_weights.save_tensors(d / "rel-clip-vision.safetensors",
                                             pm_weights.make_clip_vision_state_dict()),
        r"CLIP vision"),
    _pm("sd15-checkpoint", "rel-sd15.safetensors",
        lambda d, c: pm_weights.save_tensors(d / "rel-sd15.safetensors",
                                             pm_weights.make_sd_checkpoint_state_dict("sd15")),
        r"Stable Diffusion checkpoint"),
    _pm("sdxl-checkpoint-ckpt", "rel-sdxl.ckpt",
        lambda d, c: pm_weights.save_tensors(d / "rel-sdxl.ckpt",
                                             pm_weights.make_sd_checkpoint_state_dict("sdxl")),
        r"Stable Diffusion checkpoint"),
    _pm("lora-only", "rel-lora-only.safetensors",
        lambda d, c: pm_weights.write_lora_only(d / "rel-lora-only.safetensors", c.lora,
                                                prefix="lora_weights."),
        r"only a LoRA"),
    _pm("unknown-keys", "rel-unknown.safetensors",
        lambda d, c: pm_weights.save_tensors(d / "rel-unknown.safetensors",
                                             pm_weights.make_random_keys_state_dict()),
        r"not a PhotoMaker file"),
    _pm("pickle-of-a-list", "rel-list.bin",
        lambda d, c: torch.save([torch.zeros(3)], str(d / "rel-list.bin")), r"not a state dict"),
]


IDENTITY_CASES = [
    _id("pickle-payload-as-identity", "rel-evil.safetensors",
        lambda d, c: pm_weights.write_malicious_pickle(d / "rel-evil.safetensors", c.marker), UNREADABLE_ID,
        payload=True),
    _id("zero-byte", "rel-empty.safetensors",
        lambda d, c: pm_weights.write_zero_byte(d / "rel-empty.safetensors"), UNREADABLE_ID),
    _id("truncated", "rel-trunc.safetensors",
        lambda d, c: _truncated_copy(d / "rel-trunc.safetensors", lambda p: valid_identity(p, n=4), 0.6),
        UNREADABLE_ID),
    _id("random-bytes", "rel-random.safetensors",
        lambda d, c: write_random(d / "rel-random.safetensors", seed=3), UNREADABLE_ID),
    _id("corrupt-header", "rel-badjson.safetensors",
        lambda d, c: write_safetensors_raw(d / "rel-badjson.safetensors",
                                           b'{"tokens": {"dtype": "F32", "shape": ['),
        UNREADABLE_ID),
    _id("huge-header", "rel-hugeheader.safetensors",
        lambda d, c: write_safetensors_raw(d / "rel-hugeheader.safetensors", b"{}",
                                           declared=(1 << 63) + 12345),
        UNREADABLE_ID),
    _id("nan-tokens", "rel-nan.safetensors", lambda d, c: save_identity_file(
        d / "rel-nan.safetensors", torch.full((2, 1, 2048), float("nan")), "v1"), r"non-finite"),
    _id("inf-weights", "rel-inf-weights.safetensors", lambda d, c: save_identity_file(
        d / "rel-inf-weights.safetensors", torch.randn(2, 1, 2048), "v1",
        weights=torch.tensor([1.0, float("inf")])),
        r"non-finite"),
    _id("nan-arcface", "rel-nan-arcface.safetensors", lambda d, c: save_identity_file(
        d / "rel-nan-arcface.safetensors", torch.randn(1, 2, 2048), "v2",
        arcface=torch.full((1, 512), float("nan"))), r"non-finite"),
    _id("shape-token-width", "rel-shape-width.safetensors", lambda d, c: save_identity_file(
        d / "rel-shape-width.safetensors", torch.randn(2, 1, 1024), "v1"), r"shape"),
    _id("shape-tokens-2d", "rel-shape-2d.safetensors", lambda d, c: save_identity_file(
        d / "rel-shape-2d.safetensors", torch.randn(2, 2048), "v1"), r"shape"),
    _id("shape-weights", "rel-shape-weights.safetensors", lambda d, c: save_identity_file(
        d / "rel-shape-weights.safetensors", torch.randn(2, 1, 2048), "v1", weights=torch.ones(5)),
        r"weights|one entry per image"),
    _id("shape-arcface", "rel-shape-arcface.safetensors", lambda d, c: save_identity_file(
        d / "rel-shape-arcface.safetensors", torch.randn(2, 1, 2048), "v1", arcface=torch.randn(2, 7)),
        r"face embeddings have shape"),
    _id("zero-images", "rel-zero.safetensors", lambda d, c: save_identity_file(
        d / "rel-zero.safetensors", torch.zeros(0, 1, 2048), "v1"), r"no images"),
    _id("version-vs-tokens", "rel-version.safetensors", lambda d, c: save_identity_file(
        d / "rel-version.safetensors", torch.randn(2, 2, 2048), "v1"), r"doesn't match"),
    _id("unknown-version", "rel-version3.safetensors", lambda d, c: save_identity_file(
        d / "rel-version3.safetensors", torch.randn(2, 1, 2048), "v3"), r"doesn't match"),
    _id("no-metadata", "rel-nometa.safetensors", lambda d, c: pm_weights.save_tensors(
        d / "rel-nometa.safetensors", {"tokens": torch.randn(1, 1, 2048)}),
        r"not a PhotoMaker identity file"),
    _id("sdxl-lora", "rel-lora.safetensors", lambda d, c: pm_weights.save_tensors(
        d / "rel-lora.safetensors", pm_weights.make_generic_sdxl_lora(include_ff_conv=False)),
        r"not a PhotoMaker identity file"),
    _id("photomaker-file", "rel-pm.safetensors", lambda d, c: pm_weights.write_flat_safetensors(
        d / "rel-pm.safetensors", c.enc["v1"], None), r"not a PhotoMaker identity file"),
    _id("sd15-checkpoint", "rel-sd15.safetensors", lambda d, c: pm_weights.save_tensors(
        d / "rel-sd15.safetensors", pm_weights.make_sd_checkpoint_state_dict("sd15")),
        r"not a PhotoMaker identity file"),
]


def _pack(d: Path, name: str) -> Path:
    p = d / "models" / name
    p.mkdir(parents=True, exist_ok=True)
    return p


def _nested(d: Path, c: Ctx) -> None:
    fake_insightface.write_pack(_pack(d, "rel_nested") / "rel_nested")


def _random_onnx(d: Path, c: Ctx) -> None:
    p = _pack(d, "rel_random_onnx")
    write_random(p / "det_10g.onnx", 20000, seed=4)
    write_random(p / "w600k_r50.onnx", 20000, seed=5)


def _only(which: str):
    def write(d: Path, c: Ctx) -> None:
        p = _pack(d, f"rel_only_{which}")
        det, rec = fake_insightface.write_pack(p)
        os.remove(rec if which == "det" else det)
    return write


def _truncated_det(d: Path, c: Ctx) -> None:
    p = _pack(d, "rel_trunc_det")
    det, _ = fake_insightface.write_pack(p)
    data = Path(det).read_bytes()
    Path(det).write_bytes(data[: len(data) // 3])


def _zero_onnx(d: Path, c: Ctx) -> None:
    p = _pack(d, "rel_zero_onnx")
    det, rec = fake_insightface.write_pack(p)
    Path(det).write_bytes(b"")


def _zip_only(d: Path, c: Ctx) -> None:
    import zipfile

    p = _pack(d, "rel_zip_only")
    with zipfile.ZipFile(p / "buffalo_l.zip", "w") as z:
        z.writestr("buffalo_l/readme.txt", "not extracted")


def _pickle_onnx(d: Path, c: Ctx) -> None:
    p = _pack(d, "rel_pickle_onnx")
    _, rec = fake_insightface.write_pack(p)
    os.remove(os.path.join(p, fake_insightface.DET_NAME))
    pm_weights.write_malicious_pickle(p / "det_10g.onnx", c.marker, style="raw")


INSIGHTFACE_CASES = [
    _if("empty-folder", "rel_empty", lambda d, c: _pack(d, "rel_empty"), r"empty"),
    _if("nested-folder", "rel_nested", _nested, r"nested folder"),
    _if("random-bytes-onnx", "rel_random_onnx", _random_onnx, r"Cannot read ONNX|No face detector"),
    _if("only-detector", "rel_only_det", _only("det"), r"No face recognizer"),
    _if("only-recognizer", "rel_only_rec", _only("rec"), r"No face detector"),
    _if("truncated-detector", "rel_trunc_det", _truncated_det, r"Cannot read ONNX|No face detector"),
    _if("zero-byte-onnx", "rel_zero_onnx", _zero_onnx, r"Cannot read ONNX|No face detector"),
    _if("zip-not-extracted", "rel_zip_only", _zip_only, r"No \.onnx model files"),
    _if("pickle-payload-as-onnx", "rel_pickle_onnx", _pickle_onnx, r"Cannot read ONNX|No face detector",
        payload=True),
]


# "A V1 file where V2 is needed and back": the identity's version against the encoder's. The test
# builds the graphs; `name` is the identity file (written here) or empty.
VERSION_CASES = [
    Case("v1-identity-file-with-v2-encoder", VERSION, "rel-v1-ident.safetensors",
         lambda d, c: valid_identity(d / "rel-v1-ident.safetensors", "v1"),
         r"V1 identity but the encoder is V2",
         node="StackedIDLoad", input="identity_file"),
    Case("v2-identity-file-with-v1-encoder", VERSION, "rel-v2-ident.safetensors",
         lambda d, c: valid_identity(d / "rel-v2-ident.safetensors", "v2"),
         r"V2 identity but the encoder is V1",
         node="StackedIDLoad", input="identity_file"),
    Case("v2-identity-file-into-v1-apply", VERSION, "rel-v2-ident-apply.safetensors",
         lambda d, c: valid_identity(d / "rel-v2-ident-apply.safetensors", "v2"),
         r"encoded with PhotoMaker V2 but the encoder is V1", node="StackedIDApply", input="identity"),
    Case("v1-encoded-into-v2-apply", VERSION, "", lambda d, c: None,
         r"encoded with PhotoMaker V1 but the encoder is V2", node="StackedIDApply", input="identity"),
    Case("stack-v1-with-v2", VERSION, "", lambda d, c: None, r"different PhotoMaker versions",
         node="StackedIDStack", input="identity_1"),
    Case("v2-file-without-face-analysis", VERSION, "", lambda d, c: None, r"needs face embeddings",
         node="StackedIDEncode", input="face_analysis"),
]

ALL_CASES = PHOTOMAKER_CASES + IDENTITY_CASES + INSIGHTFACE_CASES + VERSION_CASES


def write_case(case: Case, folders: dict, ctx: Ctx) -> None:
    """folders: loader -> folder (PHOTOMAKER: models/photomaker, IDENTITY and VERSION:
    models/photomaker_identities, INSIGHTFACE: the insightface root holding models/<pack>)."""
    folder = Path(folders[IDENTITY if case.loader == VERSION else case.loader])
    folder.mkdir(parents=True, exist_ok=True)
    case.write(folder, ctx)
