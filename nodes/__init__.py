"""The pack's V3 nodes (thin: the work is in photomaker_core; this package adds only what needs the
host: sockets, model folders, the managed encoder, progress bars and input-named errors)."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import folders
from .apply import StackedIDApply, StackedIDStyle
from .apply_batch import StackedIDApplyBatch
from .detailer import StackedIDFaceDetailer
from .face_similarity import StackedIDFaceSimilarity
from .identity import StackedIDEncode, StackedIDLoad, StackedIDSave, StackedIDStack
from .keypoints import StackedIDFaceKeypoints
from .loaders import StackedIDFaceAnalysisLoader, StackedIDLoader

NODES: list[type[io.ComfyNode]] = [
    StackedIDLoader, StackedIDFaceAnalysisLoader, StackedIDEncode, StackedIDStack,
    StackedIDSave, StackedIDLoad, StackedIDApply, StackedIDStyle,
    StackedIDFaceSimilarity, StackedIDApplyBatch, StackedIDFaceKeypoints, StackedIDFaceDetailer,
]


class StackedIDExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> StackedIDExtension:
    folders.register_folders()
    return StackedIDExtension()
