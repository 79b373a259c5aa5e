"""photomaker_core: PhotoMaker (stacked ID embedding) as a plain PyTorch library.

No ComfyUI imports: the node layer injects the host's ops (`operations=`) and memory management.
Public API (stable):
    read_photomaker_file(path) -> PhotoMakerWeights(encoder, lora, version)
    load_photomaker(path_or_state_dict, operations=None, dtype=None, device=None) -> PhotoMakerEncoder
        .version ("v1"/"v2"), .tokens_per_image (1/2)
        .encode_identity(pixels [N,3,224,224], arcface [N,512] | None) -> [N, k, 2048]
        .fuse(prompt_embeds [B,T,2048], positions, id_tokens [M,2048], weights=None) -> new tensor
    clip_preprocess(IMAGE [N,H,W,C]) -> [N,3,224,224]
"""
from .encoder import EncoderConfig, PhotoMakerEncoder, build_encoder, fuse_rows, infer_config, load_photomaker
from .errors import IdentityError, PhotoMakerError, PhotoMakerFileError
from .loading import (PhotoMakerWeights, detect_version, read_photomaker_file, read_state_dict,
                      split_photomaker_state_dict)
from .preprocess import clip_preprocess

__all__ = [
    "EncoderConfig", "PhotoMakerEncoder", "build_encoder", "fuse_rows", "infer_config", "load_photomaker",
    "IdentityError", "PhotoMakerError", "PhotoMakerFileError", "PhotoMakerWeights", "detect_version",
    "read_photomaker_file", "read_state_dict", "split_photomaker_state_dict", "clip_preprocess",
]
