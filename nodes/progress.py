"""The host side of the library's progress callbacks: a ComfyUI progress bar plus Cancel."""
from __future__ import annotations

import comfy.model_management as mm


def progress_callback(pbar, take_total: bool = False):
    """A `photomaker_core.face_pipeline.Progress` for `pbar` (a comfy.utils.ProgressBar): raises
    the host's interrupt exception when the user pressed Cancel, then moves the bar to `done`
    (and, with take_total, sets its length to the caller's total: known only once faces are found)."""

    def report(done: int, total: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        pbar.update_absolute(done, max(1, total) if take_total else None)

    return report
