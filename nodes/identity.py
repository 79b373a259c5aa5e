"""Identity nodes: encode photos into an IDENTITY, stack/mix identities, save and load them."""
from __future__ import annotations

import logging
import os

import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..photomaker_core.face_pipeline import image_numbers, prepare_id_photos
from ..photomaker_core.identity import Identity, load_identity, save_identity, stack_identities
from .errors import NodeInputError, input_errors
from .folders import IDENTITY_FOLDER
from .input_checks import require_images
from .progress import progress_callback
from .sockets import CATEGORY, EncoderSocket, FaceAnalysisSocket, IdentitySocket

log = logging.getLogger("photomaker_stackedid")


class StackedIDEncode(io.ComfyNode):
    NAME = "PhotoMaker Encode Identity"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDEncode",
            display_name="PhotoMaker Encode Identity (Stacked ID)",
            category=CATEGORY,
            description="Encodes photos of one person into an IDENTITY (one batched pass of the vision "
                        "tower; prompt edits downstream never re-run it).",
            inputs=[
                EncoderSocket.Input("encoder", tooltip="From PhotoMaker Loader."),
                io.Image.Input("images", tooltip="Photos of the person (batch; any size, RGBA/grayscale ok). "
                                                 "The face should fill most of each image."),
                FaceAnalysisSocket.Input(
                    "face_analysis", optional=True,
                    tooltip="InsightFace models; required for V2 (ArcFace), optional for V1 "
                            "(then faces are checked and stored for similarity scoring)."),
                io.Combo.Input("no_face", options=["error", "skip"], default="error",
                               tooltip="When an image has no detectable face: stop with an error naming it, "
                                       "or leave it out of the identity."),
                io.Combo.Input("face_select", options=["best score", "largest"], default="best score",
                               tooltip="Which face to use when an image has several."),
                io.Boolean.Input("crop_to_face", default=False,
                                 tooltip="Crop the CLIP input around the detected face (off = the "
                                         "reference's whole-image behaviour)."),
            ],
            outputs=[
                IdentitySocket.Output("identity", display_name="identity",
                                      tooltip="Per-image ID tokens, version, image count, provenance."),
                io.Image.Output("preview", display_name="preview",
                                tooltip="The images that were encoded, detected face boxes drawn."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, encoder, images, face_analysis=None, no_face="error", face_select="best score",
                crop_to_face=False) -> io.NodeOutput:
        require_images(cls.NAME, "images", images)
        if encoder.version == "v2" and face_analysis is None:
            raise NodeInputError(cls.NAME, "face_analysis",
                                 "PhotoMaker V2 needs face embeddings: connect a PhotoMaker InsightFace "
                                 "Loader (buffalo_l) to face_analysis.")
        if crop_to_face and face_analysis is None:
            raise NodeInputError(cls.NAME, "crop_to_face",
                                 "cropping to the face needs face_analysis connected")
        pbar = comfy.utils.ProgressBar(images.shape[0] + 1,
                                       node_id=cls.hidden.unique_id if cls.hidden else None)
        with input_errors(cls.NAME, "images"):
            photos = prepare_id_photos(images, face_analysis, select=face_select, no_face=no_face,
                                       crop_to_face=crop_to_face, image_size=encoder.model.image_size,
                                       progress=progress_callback(pbar))
        if photos.skipped:
            log.warning("%s: no face in image(s) %s of %d, skipped", cls.NAME, image_numbers(photos.skipped),
                        images.shape[0])
        arc = photos.arcface
        # The encoder checks the face embeddings against its own geometry (V2 only reads them).
        with input_errors(cls.NAME, "face_analysis" if encoder.version == "v2" else "images"):
            tokens = encoder.encode_identity(photos.pixels, arc if encoder.version == "v2" else None)
        pbar.update(1)
        provenance = {"encoder_file": encoder.file_name, "encoder_fingerprint": encoder.fingerprint,
                      "image_count": len(photos.kept), "source_indices": photos.kept}
        identity = Identity.encoded(tokens, encoder.version, arc, provenance)
        return io.NodeOutput(identity, photos.previews)


class StackedIDStack(io.ComfyNode):
    NAME = "PhotoMaker Stack Identities"

    @classmethod
    def define_schema(cls):
        ins = []
        for i in range(1, 5):
            ins.append(IdentitySocket.Input(f"identity_{i}", optional=i > 2,
                                            tooltip=f"Identity {i} (from Encode Identity or Load Identity)."))
            ins.append(io.Float.Input(f"weight_{i}", default=1.0, min=0.0, max=2.0, step=0.05,
                                      tooltip="Per-row fusion weight of this identity's images: 1 = plain "
                                              "stacking, 0 = left out."))
        return io.Schema(
            node_id="StackedIDStack",
            display_name="PhotoMaker Stack Identities (Stacked ID)",
            category=CATEGORY,
            description="Mixes 2-4 identities into one stack (the paper's identity mixing). Each identity's "
                        "fused rows are blended with the plain class word by its weight.",
            inputs=ins,
            outputs=[IdentitySocket.Output("identity", display_name="identity",
                                           tooltip="The stacked identity.")],
        )

    @classmethod
    def execute(cls, **kw) -> io.NodeOutput:
        pairs = [(kw.get(f"identity_{i}"), kw.get(f"weight_{i}", 1.0)) for i in range(1, 5)]
        pairs = [(ident, w) for ident, w in pairs if ident is not None]
        with input_errors(cls.NAME, "identity_1"):
            return io.NodeOutput(stack_identities([p[0] for p in pairs], [p[1] for p in pairs]))


def identity_files() -> list[str]:
    return folder_paths.get_filename_list(IDENTITY_FOLDER)


class StackedIDSave(io.ComfyNode):
    NAME = "PhotoMaker Save Identity"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDSave",
            display_name="PhotoMaker Save Identity (Stacked ID)",
            category=CATEGORY,
            description="Saves an IDENTITY as .safetensors into models/photomaker_identities, to reuse "
                        "it without the photos or the vision pass.",
            inputs=[
                IdentitySocket.Input("identity", tooltip="The identity to save."),
                io.String.Input("name", default="identity",
                                tooltip="File name (no extension); a number is appended if it exists."),
            ],
            outputs=[io.String.Output("file", display_name="file", tooltip="The saved file name.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, identity, name) -> io.NodeOutput:
        safe = "".join(c for c in name.strip() if c.isalnum() or c in "-_ .").strip(" .") or "identity"
        folder = folder_paths.get_folder_paths(IDENTITY_FOLDER)[0]
        os.makedirs(folder, exist_ok=True)
        path, n = os.path.join(folder, f"{safe}.safetensors"), 1
        while os.path.exists(path):
            path, n = os.path.join(folder, f"{safe}_{n:03d}.safetensors"), n + 1
        save_identity(identity, path)
        log.info("saved %s to %s", identity.describe(), path)
        return io.NodeOutput(os.path.basename(path))


class StackedIDLoad(io.ComfyNode):
    NAME = "PhotoMaker Load Identity"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDLoad",
            display_name="PhotoMaker Load Identity (Stacked ID)",
            category=CATEGORY,
            description="Loads a saved IDENTITY from models/photomaker_identities.",
            inputs=[
                io.Combo.Input("identity_file", options=identity_files(),
                               tooltip="A file saved by PhotoMaker Save Identity."),
                EncoderSocket.Input(
                    "encoder", optional=True,
                    tooltip="If connected, the file is checked against this encoder (a warning when it was "
                            "made with another PhotoMaker file, an error on a version mismatch)."),
            ],
            outputs=[IdentitySocket.Output("identity", display_name="identity",
                                           tooltip="The loaded identity.")],
        )

    @classmethod
    def execute(cls, identity_file, encoder=None) -> io.NodeOutput:
        path = folder_paths.get_full_path(IDENTITY_FOLDER, identity_file)
        if path is None:
            raise NodeInputError(cls.NAME, "identity_file", f"'{identity_file}' not found in "
                                 f"models/{IDENTITY_FOLDER}")
        with input_errors(cls.NAME, "identity_file"):
            identity = load_identity(path)
        if encoder is not None:
            if encoder.version != identity.version:
                raise NodeInputError(cls.NAME, "identity_file",
                                     f"'{identity_file}' is a {identity.version.upper()} identity but "
                                     f"the encoder is {encoder.version.upper()}: load the matching "
                                     f"PhotoMaker file.")
            made_with = identity.provenance.get("encoder_fingerprint")
            if made_with and made_with != encoder.fingerprint:
                log.warning("%s: '%s' was made with another PhotoMaker file (%s) than the connected "
                            "encoder (%s); results may differ.", cls.NAME, identity_file,
                            identity.provenance.get("encoder_file", made_with), encoder.file_name)
        return io.NodeOutput(identity)

    @classmethod
    def fingerprint_inputs(cls, identity_file, encoder=None):
        path = folder_paths.get_full_path(IDENTITY_FOLDER, identity_file)
        return os.path.getmtime(path) if path else identity_file
