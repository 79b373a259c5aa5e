"""The PhotoMaker ID encoder under the host's memory manager (ModelPatcher + load_models_gpu),
one per weight file."""
from __future__ import annotations

import hashlib
import os
import threading
import weakref

import torch

import comfy.model_management as mm
import comfy.model_patcher
import comfy.ops

from ..photomaker_core import PhotoMakerEncoder, build_encoder

# Feature detection: newer hosts split the patcher; 0.3.52/0.3.75 only have ModelPatcher.
Patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def file_fingerprint(path: str, chunk: int = 4 << 20) -> str:
    """Cheap, stable identity of a weight file: size + first and last 4 MiB (hashing 1.8 GB
    at every load would cost seconds)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX tiles (bf16 matrix units: Sapphire Rapids and later)."""
    probe = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:
        return False


def compute_dtype(device: torch.device, storage: torch.dtype) -> torch.dtype:
    """fp16/bf16 storage computes in that dtype on accelerators. On CPU fp32 (half matmuls are slow
    there; manual_cast upcasts the weights per layer), except bf16 storage, which the host uses only
    when asked (--bf16-text-enc), on a CPU with AMX: there bf16 matmuls run about 3x faster than fp32
    (measured: tests/benchmarks). The default (fp16 storage on CPU) keeps fp32 numerics."""
    if storage not in (torch.float16, torch.bfloat16):
        return torch.float32
    if mm.is_device_cpu(device):
        return torch.bfloat16 if storage == torch.bfloat16 and cpu_has_amx_bf16() else torch.float32
    return storage


class ManagedEncoder:
    """A PhotoMaker ID encoder living under the host's memory manager (ModelPatcher +
    load_models_gpu), like core's CLIP vision model."""

    def __init__(self, encoder_sd: dict, file_name: str, fingerprint: str):
        self.load_device = mm.text_encoder_device()
        self.offload_device = mm.text_encoder_offload_device()
        self.dtype = mm.text_encoder_dtype(self.load_device)
        model = build_encoder(encoder_sd, operations=comfy.ops.manual_cast, dtype=self.dtype,
                              device=self.offload_device)
        # Tensors the file already holds in their target dtype arrive as views of the (memory-mapped)
        # file; own them, so the mapping and its pages are released once the loader drops the file.
        from_file = {t.data_ptr() for t in encoder_sd.values()}
        for p in model.parameters():
            if p.data_ptr() in from_file:
                p.data = p.data.clone()
        self.model: PhotoMakerEncoder = model
        self.patcher = Patcher(model, load_device=self.load_device, offload_device=self.offload_device)
        self.file_name = file_name
        self.fingerprint = fingerprint
        self.vision_calls = 0  # how many times the vision tower ran (observability + tests)

    @property
    def version(self) -> str:
        return self.model.version

    def _load(self) -> torch.dtype:
        mm.load_models_gpu([self.patcher])
        return compute_dtype(self.load_device, self.dtype)

    def encode_identity(self, pixels: torch.Tensor, arcface: torch.Tensor | None) -> torch.Tensor:
        """[N,3,224,224] (+[N,512]) -> [N, k, 2048] float32 on the intermediate device, one batched
        forward for every image."""
        dtype = self._load()
        device = self.load_device
        self.vision_calls += 1
        with torch.inference_mode():
            out = self.model.encode_identity(pixels.to(device, dtype),
                                             None if arcface is None else arcface.to(device, dtype))
        return out.to(mm.intermediate_device(), torch.float32)

    def fuse(self, cond: torch.Tensor, positions, tokens: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
        dtype = self._load()
        device = self.load_device
        with torch.inference_mode():
            out = self.model.fuse(cond.to(device, dtype), positions, tokens.to(device, dtype),
                                  weights.to(device, dtype))
        return out.to(mm.intermediate_device(), cond.dtype)

    def __repr__(self):
        return f"<PhotoMaker {self.version} encoder '{self.file_name}'>"


_ENCODERS: "weakref.WeakValueDictionary[tuple, ManagedEncoder]" = weakref.WeakValueDictionary()
_ENCODERS_LOCK = threading.Lock()


def cached_encoder(key: tuple, factory) -> ManagedEncoder:
    """One encoder per file (several loader nodes on the same file share the weights)."""
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = factory()
            _ENCODERS[key] = enc
        return enc
