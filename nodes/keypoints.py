"""Face Keypoints: the detected face's five keypoints drawn as a control image (InstantID or
OpenPose-face style) for a ControlNet / T2I-Adapter. The drawing is photomaker_core/keypoints.py."""
from __future__ import annotations

import logging

import comfy.utils
from comfy_api.latest import io

from ..photomaker_core import keypoints
from ..photomaker_core.face_pipeline import image_numbers, keypoint_images
from .input_checks import require_images
from .progress import progress_callback
from .sockets import CATEGORY, FaceAnalysisSocket

log = logging.getLogger("photomaker_stackedid")


class StackedIDFaceKeypoints(io.ComfyNode):
    NAME = "PhotoMaker Face Keypoints"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDFaceKeypoints",
            display_name="PhotoMaker Face Keypoints (Stacked ID)",
            category=CATEGORY,
            description="Detects the face in each image (the ID photo or any picture) and draws its five "
                        "keypoints (eyes, nose, mouth corners) on black, the size of the input: a control "
                        "image for a keypoint ControlNet (InstantID style) or an OpenPose ControlNet / "
                        "T2I-Adapter. An image without a face gives a black image and a line in the report.",
            inputs=[
                FaceAnalysisSocket.Input("face_analysis",
                                         tooltip="From PhotoMaker InsightFace Loader (buffalo_l)."),
                io.Image.Input("images",
                               tooltip="Photos to take the face pose from (a batch: one control image "
                                       "each)."),
                io.Combo.Input("style", options=list(keypoints.STYLES), default="instantid",
                               tooltip="instantid: coloured limbs from eyes and mouth corners to the nose "
                                       "and coloured dots, as InstantID's keypoint ControlNet expects. "
                                       "openpose_face: white dots, as OpenPose face landmarks."),
                io.Combo.Input("face_select", options=["largest", "score"], default="largest",
                               tooltip="With several faces: the largest box, or the highest detection "
                                       "score."),
            ],
            outputs=[
                io.Image.Output("keypoints", display_name="keypoints",
                                tooltip="The control images, same size as the input."),
                io.String.Output("report", display_name="report",
                                 tooltip="Per image: the keypoints found, or 'no face'."),
            ],
        )

    @classmethod
    def execute(cls, face_analysis, images, style="instantid", face_select="largest") -> io.NodeOutput:
        require_images(cls.NAME, "images", images)
        n = int(images.shape[0])
        result = keypoint_images(face_analysis, images, style, face_select,
                                 progress_callback(comfy.utils.ProgressBar(n)))
        if result.missing:
            log.warning("%s: no face in image(s) %s of %d, their control images are black", cls.NAME,
                        image_numbers(result.missing), n)
        return io.NodeOutput(result.images, result.report())
