"""Face Similarity: score and rank generated images by ArcFace similarity to the reference person
(the PhotoMaker paper's "Face Sim." metric). The math is in photomaker_core/similarity.py."""
from __future__ import annotations

import logging

import comfy.utils
from comfy_api.latest import io, ui

from ..photomaker_core import similarity
from ..photomaker_core.face_pipeline import best_faces, image_numbers, reference_rows
from .errors import NodeInputError, input_errors
from .input_checks import require_images
from .progress import progress_callback
from .sockets import CATEGORY, FaceAnalysisSocket, IdentitySocket

log = logging.getLogger("photomaker_stackedid")


class StackedIDFaceSimilarity(io.ComfyNode):
    NAME = "PhotoMaker Face Similarity"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="StackedIDFaceSimilarity",
            display_name="PhotoMaker Face Similarity (Stacked ID)",
            category=CATEGORY,
            description="Scores each generated image by ArcFace cosine similarity of its best face (highest "
                        "detection score) to the mean of the reference faces' normalised embeddings (the "
                        "PhotoMaker paper's Face Sim.), and ranks the batch best-first. 1.0 = the same face; "
                        "images without a face score -1 and are ranked last. Shows the scored thumbnails.",
            inputs=[
                FaceAnalysisSocket.Input("face_analysis",
                                         tooltip="From PhotoMaker InsightFace Loader (buffalo_l)."),
                io.Image.Input("images",
                               tooltip="The generated images to score (a batch, e.g. several seeds)."),
                IdentitySocket.Input(
                    "reference_identity", optional=True,
                    tooltip="The person, as an IDENTITY from Encode Identity (with face_analysis connected "
                            "there), Stack Identities or Load Identity: its stored ArcFace embeddings are "
                            "the reference. Connect this or reference_images."),
                io.Image.Input("reference_images", optional=True,
                               tooltip="Photos of the person (a batch); their faces are detected here. "
                                       "Connect this or reference_identity (with both, all their faces are "
                                       "used)."),
                io.Int.Input("top_k", default=2, min=1, max=4096,
                             tooltip="How many of the best images the top_k output keeps."),
            ],
            outputs=[
                io.Image.Output("ranked", display_name="ranked",
                                tooltip="The images re-ordered best-first (no-face images last)."),
                io.Image.Output("top_k_images", display_name="top_k",
                                tooltip="The best min(top_k, batch size) images, best first."),
                io.String.Output("scores", display_name="scores_json",
                                 tooltip="JSON list of the scores in input order, e.g. "
                                         "[0.91, 0.47, -1.0]; -1.0 = no face found."),
                io.Float.Output("best_score", display_name="best_score",
                                tooltip="The highest score (-1.0 if no image has a face)."),
                io.String.Output("report", display_name="report",
                                 tooltip="Readable ranking: rank, input position (1 = first) and score "
                                         "per image."),
                io.Image.Output("preview", display_name="preview",
                                tooltip="Thumbnails in ranked order with rank, input position and "
                                        "score drawn on each, face boxes outlined."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, face_analysis, images, reference_identity=None, reference_images=None,
                top_k=2) -> io.NodeOutput:
        node = cls.NAME
        if reference_identity is None and reference_images is None:
            raise NodeInputError(node, "reference_identity",
                                 "connect a reference: either reference_identity (an IDENTITY encoded with "
                                 "face_analysis) or reference_images (photos of the person).")
        require_images(node, "images", images)
        refs = cls._reference_rows(face_analysis, reference_identity, reference_images)

        n = int(images.shape[0])
        found = best_faces(face_analysis, images, progress_callback(comfy.utils.ProgressBar(n)))
        reference_input = "reference_identity" if reference_identity is not None else "reference_images"
        with input_errors(node, reference_input):
            result = similarity.rank_faces(found, refs)

        k = max(1, min(int(top_k), n))
        ranked = result.reorder(images)
        top = result.reorder(images, first=k)
        sheet = similarity.ranking_sheet(result, images, k)
        report = result.report(top_k=k)
        log.info("%s:\n%s", node, report)
        ui_out = {"text": [report]}
        try:
            ui_out.update(ui.PreviewImage(sheet).as_dict())
        except Exception as e:  # a preview that can't be written (read-only temp dir) is not fatal
            log.warning("%s: could not write the preview (%s)", node, e)
        return io.NodeOutput(ranked, top, result.to_json(), float(result.best_score), report, sheet,
                             ui=ui_out)

    @classmethod
    def _reference_rows(cls, face_analysis, reference_identity, reference_images):
        """The reference faces' ArcFace rows [M, 512]: the identity's stored ones, then the photos'."""
        node = cls.NAME
        rows = []
        if reference_identity is not None:
            arc = getattr(reference_identity, "arcface", None)
            if arc is None:
                raise NodeInputError(node, "reference_identity",
                                     "this identity carries no ArcFace face embeddings (a PhotoMaker V1 "
                                     "identity encoded without face analysis). Connect a PhotoMaker "
                                     "InsightFace Loader to face_analysis of PhotoMaker Encode Identity and "
                                     "encode again, or connect the photos to reference_images instead.")
            rows.append(arc)
        if reference_images is not None:
            require_images(node, "reference_images", reference_images)
            found, missing = reference_rows(face_analysis, reference_images,
                                            progress_callback(comfy.utils.ProgressBar(reference_images.shape[0])))
            if missing:
                log.warning("%s: no face in reference image(s) %s, left out", node, image_numbers(missing))
            if found is None:
                raise NodeInputError(node, "reference_images",
                                     f"no face found in any of the {reference_images.shape[0]} reference "
                                     f"images: use photos where the face is clearly visible.")
            rows.append(found)
        return similarity.join_rows(rows)
