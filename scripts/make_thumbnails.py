"""Template thumbnails for workflows/*.json from the UI test's screenshots.

ComfyUI's frontend lists a custom node pack's workflows/ under Templates and shows each one's
thumbnail from `/api/workflow_templates/<pack folder>/<workflow name>.jpg` (always .jpg for pack
templates), in a square card with cover fit. So each thumbnail is `workflows/<name>.jpg`, a square
(400 px by default) small JPEG (< 60 KB) made from the screenshot of the graph that tests/test_ui.py
saves (test-artifacts/ui/<name>.png). Our graphs are wide (about 2.5:1): scaled whole into a square
they would be a thin strip, so the middle of the graph (where the PhotoMaker nodes are) is kept, at
most 1.5 times as wide as the graph is high, and padded to a square with the canvas colour.

    .venv/bin/python -m pytest -c tests/pytest.ini --rootdir=tests tests/test_ui.py -q   # screenshots
    .venv/bin/python scripts/make_thumbnails.py                                        # -> workflows/*.jpg

Development tooling: nothing in the pack imports this. Needs Pillow.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZE = 400
MAX_BYTES = 60_000
MAX_ASPECT = 1.5  # widest part of the graph kept, relative to its height


def _background(img) -> tuple[int, int, int]:
    """The canvas colour: the median of the screenshot's border pixels (it has a margin of canvas)."""
    w, h = img.size
    px = img.load()
    border = [px[x, y] for x in range(0, w, 4) for y in (0, h - 1)] + \
             [px[x, y] for y in range(0, h, 4) for x in (0, w - 1)]
    return tuple(int(statistics.median(c[i] for c in border)) for i in range(3))


def make_thumbnail(screenshot: Path, dest: Path, size: int = SIZE, max_bytes: int = MAX_BYTES) -> Path:
    """The middle of `screenshot` (at most MAX_ASPECT times as wide as high, or as high as wide),
    scaled to fit a size x size square on its own canvas colour, saved as a JPEG of at most
    `max_bytes` (quality lowered until it fits)."""
    from PIL import Image

    with Image.open(screenshot) as im:
        im = im.convert("RGB")
        background = _background(im)
        w, h = im.size
        cw, ch = min(w, round(h * MAX_ASPECT)), min(h, round(w * MAX_ASPECT))
        im = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
        scale = min(size / im.width, size / im.height)
        small = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                          Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (size, size), background)
    canvas.paste(small, ((size - small.width) // 2, (size - small.height) // 2))
    dest.parent.mkdir(parents=True, exist_ok=True)
    for quality in (88, 80, 72, 64, 56, 48, 40):
        canvas.save(dest, "JPEG", quality=quality, optimize=True, progressive=True)
        if dest.stat().st_size <= max_bytes:
            return dest
    raise ValueError(f"{dest}: still over {max_bytes} bytes at quality 40")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--screenshots", type=Path, default=REPO / "test-artifacts" / "ui",
                    help="folder with <workflow name>.png (tests/test_ui.py writes them)")
    ap.add_argument("--workflows", type=Path, default=REPO / "workflows",
                    help="folder with the workflows; the .jpg files are written beside them")
    ap.add_argument("--size", type=int, default=SIZE, help="side of the square thumbnail in px")
    args = ap.parse_args(argv)
    names = sorted(p.stem for p in args.workflows.glob("*.json"))
    missing = [n for n in names if not (args.screenshots / f"{n}.png").is_file()]
    if missing:
        print(f"no screenshot in {args.screenshots} for: {', '.join(missing)}\n"
              f"run tests/test_ui.py first (it writes <workflow>.png there)", file=sys.stderr)
        return 1
    for name in names:
        dest = make_thumbnail(args.screenshots / f"{name}.png", args.workflows / f"{name}.jpg", args.size)
        shown = (dest.relative_to(args.workflows.parent) if dest.is_relative_to(args.workflows.parent)
                 else dest)
        print(f"{shown}: {dest.stat().st_size / 1000:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
