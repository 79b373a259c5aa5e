"""Loader nodes: the PhotoMaker file (encoder + its LoRA on the MODEL) and InsightFace."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..photomaker_core import read_photomaker_file
from . import lora_patch
from .errors import NodeInputError, input_errors
from .folders import INSIGHTFACE_FOLDER, PHOTOMAKER_FOLDER
from .input_checks import require_sdxl_model
from .managed_encoder import ManagedEncoder, cached_encoder, file_fingerprint
from .sockets import CATEGORY, EncoderSocket, FaceAnalysisSocket

INSIGHTFACE_PACKS = ("buffalo_l", "antelopev2")
PROVIDERS = ("auto", "CPU", "CUDA", "ROCm", "CoreML", "DirectML", "OpenVINO")


class StackedIDLoader(io.ComfyNode):
    NAME = "PhotoMaker Loader"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDLoader",
            display_name="PhotoMaker Loader (Stacked ID)",
            category=CATEGORY,
            description="Loads a PhotoMaker V1/V2 file (auto-detected): the ID encoder, and the file's "
                        "LoRA applied to the MODEL (a patched clone; the input MODEL is untouched).",
            inputs=[
                io.Combo.Input("photomaker_file",
                               options=folder_paths.get_filename_list(PHOTOMAKER_FOLDER),
                               tooltip="A PhotoMaker file from models/photomaker (photomaker-v1.bin, "
                                       "photomaker-v2.bin or a .safetensors conversion)."),
                io.Model.Input("model", optional=True,
                               tooltip="SDXL MODEL to receive PhotoMaker's LoRA. Without it the model "
                                       "output blocks whatever it is connected to; identity fidelity needs "
                                       "the LoRA."),
                io.Float.Input("lora_strength", default=1.0, min=-4.0, max=4.0, step=0.05,
                               tooltip="Strength of the file's LoRA (1.0 = the reference)."),
            ],
            outputs=[
                EncoderSocket.Output("encoder", display_name="encoder",
                                     tooltip="The PhotoMaker ID encoder (V1 or V2)."),
                io.Model.Output("patched_model", display_name="model",
                                tooltip="The MODEL with PhotoMaker's LoRA applied."),
            ],
        )

    @classmethod
    def execute(cls, photomaker_file, model=None, lora_strength=1.0) -> io.NodeOutput:
        path = folder_paths.get_full_path(PHOTOMAKER_FOLDER, photomaker_file)
        if path is None:
            raise NodeInputError(cls.NAME, "photomaker_file",
                                 f"'{photomaker_file}' not found in models/photomaker "
                                 f"({', '.join(folder_paths.get_folder_paths(PHOTOMAKER_FOLDER))}).")
        if model is not None:
            require_sdxl_model(model, cls.NAME)
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        with input_errors(cls.NAME, "photomaker_file"):
            weights = read_photomaker_file(path)
            if not weights.has_encoder:
                raise NodeInputError(cls.NAME, "photomaker_file",
                                     f"'{photomaker_file}' holds only a LoRA, no ID encoder. Use the full "
                                     f"photomaker-v1.bin / photomaker-v2.bin file.")
            encoder = cached_encoder(key, lambda: ManagedEncoder(weights.encoder, photomaker_file,
                                                                 file_fingerprint(path)))
        weights.encoder = None  # drop the raw tensors: the encoder owns its (converted) copy
        out_model = missing_model_blocker(cls.NAME)
        if model is not None:
            if not weights.lora:
                raise NodeInputError(cls.NAME, "photomaker_file",
                                     f"'{photomaker_file}' has no LoRA weights; identity fidelity "
                                     f"needs them. Use the official file.")
            # Own copies (about 186 MB at full size): views of the memory-mapped file would keep the
            # whole mapping, encoder pages included, resident for as long as the MODEL lives.
            lora = {k: v.clone() for k, v in weights.lora.items()}
            out_model = lora_patch.apply_lora(model, lora, lora_strength, cls.NAME)
        return io.NodeOutput(encoder, out_model)


def missing_model_blocker(node: str):
    """The model output when no MODEL is connected: the host's ExecutionBlocker stops the nodes that
    use it with this message (a None would reach the sampler and fail there, far from the cause)."""
    try:
        from comfy_execution.graph_utils import ExecutionBlocker
    except ImportError:  # a host without blockers: fail at the sampler as before
        return None
    return ExecutionBlocker(
        f"{node} - input 'model': no MODEL is connected, so its 'model' output is empty. Connect the "
        f"checkpoint loader's MODEL to {node}'s 'model' input (the sampler then takes the Loader's "
        f"'model' output).")


def insightface_pack_options() -> list[str]:
    found = []
    for root in folder_paths.get_folder_paths(INSIGHTFACE_FOLDER):
        models = os.path.join(root, "models")
        if os.path.isdir(models):
            found += [d for d in sorted(os.listdir(models)) if os.path.isdir(os.path.join(models, d))]
    return list(dict.fromkeys([*INSIGHTFACE_PACKS, *found]))


def find_pack_dir(pack: str) -> str:
    """First models/insightface/models/<pack> that exists, else the default location (so the
    error message names where the files should go)."""
    roots = folder_paths.get_folder_paths(INSIGHTFACE_FOLDER)
    for root in roots:
        candidate = os.path.join(root, "models", pack)
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(roots[0], "models", pack)


class StackedIDFaceAnalysisLoader(io.ComfyNode):
    NAME = "PhotoMaker InsightFace Loader"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDFaceAnalysisLoader",
            display_name="PhotoMaker InsightFace Loader (Stacked ID)",
            category=CATEGORY,
            description="Loads an InsightFace model pack (face detection + ArcFace) from "
                        "models/insightface/models/<pack>. Needed by PhotoMaker V2 and the face tools.",
            inputs=[
                io.Combo.Input("model_pack", options=insightface_pack_options(), default="buffalo_l",
                               tooltip="buffalo_l is what PhotoMaker V2 was trained with; antelopev2 "
                                       "also works."),
                io.Combo.Input("provider", options=list(PROVIDERS), default="auto",
                               tooltip="onnxruntime execution provider; auto picks the best available "
                                       "(falls back to CPU)."),
                io.Int.Input("det_size", default=640, min=128, max=1280, step=32,
                             tooltip="Face detector input size; smaller sizes are tried when no face is "
                                     "found."),
            ],
            outputs=[FaceAnalysisSocket.Output("face_analysis", display_name="face_analysis",
                                               tooltip="Face detector + ArcFace recognizer.")],
        )

    @classmethod
    def execute(cls, model_pack, provider, det_size) -> io.NodeOutput:
        from ..photomaker_core import faces

        pack_dir = find_pack_dir(model_pack)
        with input_errors(cls.NAME, _failing_loader_input):
            faces.require_insightface()  # first: a missing package is the more fundamental problem
            faces.check_model_pack(pack_dir)
            analyzer = faces.FaceAnalyzer(pack_dir, faces.resolve_providers(provider), det_size=det_size)
        return io.NodeOutput(analyzer)


def _failing_loader_input(err: Exception) -> str:
    """The InsightFace Loader input an error is about: the provider when it names one, else the pack."""
    return "provider" if "provider" in str(err) else "model_pack"
