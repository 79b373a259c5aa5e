"""PhotoMaker Face Detailer: re-samples each detected face with the identity it matches best and
pastes it back with a feathered mask. Geometry, matching and the report are in
photomaker_core/detailer.py; here only the host's parts: VAE, sampler, progress bar, Cancel.

Identities and prompts come in pairs (positive_1 + identity_1, positive_2 + identity_2, ...):
Apply's output already has its identity fused into the prompt, so a face matched to identity k is
re-sampled with positive_k, which must be the Apply output made from identity_k."""
from __future__ import annotations

import logging

import comfy.model_management as mm
import comfy.sample
import comfy.samplers
import comfy.utils
from comfy_api.latest import io

from ..photomaker_core import detailer as core
from ..photomaker_core.face_pipeline import detect_batch
from ..photomaker_core.preprocess import to_rgb
from .errors import NodeInputError
from .input_checks import require_images
from .progress import progress_callback
from .sockets import CATEGORY, FaceAnalysisSocket, IdentitySocket

log = logging.getLogger("photomaker_stackedid")

PAIRS = 4  # identity inputs (as Stack Identities)
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _pair_inputs() -> list:
    ins = []
    for k in range(1, PAIRS + 1):
        ins.append(io.Conditioning.Input(f"positive_{k}", optional=k > 1,
                                         tooltip=f"The PhotoMaker Apply output made with identity_{k}: faces "
                                                 f"matched to identity_{k} are re-sampled with it."))
        ins.append(IdentitySocket.Input(f"identity_{k}", optional=k > 1,
                                        tooltip=f"Identity {k} (encoded with face_analysis connected, so it "
                                                f"carries ArcFace embeddings): faces are matched to it."))
    return ins


class StackedIDFaceDetailer(io.ComfyNode):
    NAME = "PhotoMaker Face Detailer"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDFaceDetailer",
            display_name="PhotoMaker Face Detailer (Stacked ID)",
            category=CATEGORY,
            description="Finds every face, gives each the identity whose ArcFace embedding it matches best, "
                        "re-samples the face crop at the working size with that identity's prompt and pastes "
                        "it back with a feathered mask. Pixels outside the pasted faces are left exactly as "
                        "they were. Best for small or distant faces (full-body shots).",
            inputs=[
                io.Image.Input("images", tooltip="The images to detail (a batch)."),
                io.Model.Input("model",
                               tooltip="The model from PhotoMaker Loader (with the PhotoMaker LoRA)."),
                io.Vae.Input("vae", tooltip="The SDXL VAE."),
                FaceAnalysisSocket.Input("face_analysis", tooltip="From PhotoMaker InsightFace Loader."),
                io.Conditioning.Input("negative", tooltip="Negative prompt, shared by every face."),
                *_pair_inputs(),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Noise seed; face n of the batch uses seed + n."),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="Sampling steps per face."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale."),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="Sampler, as KSampler's."),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="Scheduler, as KSampler's."),
                io.Float.Input("denoise", default=0.45, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of each face is re-drawn: low keeps the face's layout and "
                                       "colours, high follows the identity more."),
                io.Float.Input("crop_padding", default=0.5, min=0.0, max=4.0, step=0.05,
                               tooltip="Context around the face: this fraction of the face size is added on "
                                       "each side of the square crop."),
                io.Int.Input("working_size", default=1024, min=64, max=4096, step=8,
                             tooltip="Square size each crop is re-sampled at (SDXL: 1024)."),
                io.Int.Input("min_face_size", default=32, min=0, max=4096,
                             tooltip="Faces narrower or shorter than this (pixels) are skipped and "
                                     "reported."),
                io.Float.Input("match_threshold", default=0.15, min=-1.0, max=1.0, step=0.01,
                               tooltip="Face Sim. a face needs with its best identity to be detailed; "
                                       "faces below it are left alone (bystanders: different people score "
                                       "about 0 to 0.15). -1 details every face."),
                io.Int.Input("feather", default=16, min=0, max=512,
                             tooltip="Width in pixels of the soft edge of the paste mask."),
            ],
            outputs=[
                io.Image.Output("detailed_images", display_name="images",
                                tooltip="The images with the matched faces detailed."),
                io.Mask.Output("face_masks", display_name="face_masks",
                               tooltip="Per image, the paste weights of the detailed faces."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: per face its box, what was done, the identity it "
                                         "was given and Face Sim. before/after."),
            ],
        )

    @classmethod
    def execute(cls, images, model, vae, face_analysis, negative, seed, steps, cfg, sampler_name, scheduler,
                denoise, crop_padding, working_size, min_face_size, match_threshold, feather,
                **pairs) -> io.NodeOutput:
        require_images(cls.NAME, "images", images)
        positives, references = cls._pairs(pairs)
        settings = core.DetailSettings(padding=crop_padding, working_size=working_size,
                                       min_face_size=min_face_size, threshold=match_threshold,
                                       feather=feather)
        rgb = to_rgb(images)  # a copy: the cached input is never written
        found = detect_batch(face_analysis, rgb, "all",
                             progress_callback(comfy.utils.ProgressBar(rgb.shape[0])))

        def resample(pixels, target, ordinal):
            return cls._resample(pixels, model, vae, positives[target], negative,
                                 (seed + ordinal) % (SEED_MAX + 1), steps, cfg, sampler_name, scheduler,
                                 denoise)

        result = core.detail_batch(rgb, found, references, resample, settings, analyzer=face_analysis,
                                   progress=progress_callback(comfy.utils.ProgressBar(1), take_total=True))
        report = result.report()
        log.info("%s: %s", cls.NAME, report)
        return io.NodeOutput(result.images.to(images.device), result.masks, report)

    @classmethod
    def _pairs(cls, pairs: dict):
        """The connected (positive_k, identity_k) pairs: positives and Face Sim. references."""
        positives, rows = [], []
        for k in range(1, PAIRS + 1):
            positive, identity = pairs.get(f"positive_{k}"), pairs.get(f"identity_{k}")
            if positive is None and identity is None:
                continue
            if positive is None or identity is None:
                missing = "positive" if positive is None else "identity"
                raise NodeInputError(cls.NAME, f"{missing}_{k}",
                                     f"identity_{k} and positive_{k} come as a pair: connect the Apply "
                                     f"output made with identity_{k} to positive_{k}, or disconnect both.")
            arcface = getattr(identity, "arcface", None)
            if arcface is None:
                raise NodeInputError(cls.NAME, f"identity_{k}",
                                     "this identity carries no ArcFace face embeddings, so faces cannot be "
                                     "matched to it. Connect a PhotoMaker InsightFace Loader to "
                                     "face_analysis of PhotoMaker Encode Identity and encode again.")
            positives.append(positive)
            rows.append(arcface)
        if not positives:
            raise NodeInputError(cls.NAME, "identity_1",
                                 "connect at least one identity with its positive prompt")
        return positives, core.identity_references(rows)

    @staticmethod
    def _resample(pixels, model, vae, positive, negative, seed, steps, cfg, sampler_name, scheduler, denoise):
        """One face crop [S, S, 3] through the host: VAE encode, KSampler-equivalent sampling (the host
        loads the models under its memory manager and checks Cancel), VAE decode."""
        latent = vae.encode(pixels[None, ..., :3])
        noise = comfy.sample.prepare_noise(latent, seed)
        samples = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative,
                                      latent, denoise=denoise, callback=_interrupt_check, disable_pbar=True,
                                      seed=seed)
        return vae.decode(samples)[0].to(pixels)


def _interrupt_check(*_args):
    """Sampler step callback: stop between steps when the user pressed Cancel."""
    mm.throw_exception_if_processing_interrupted()
