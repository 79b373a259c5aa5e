"""Lay out the example workflows (workflows/*.json) so each reads at its saved view.

Each workflow's layout is written down below as group columns: left to right, each a stack of
titled groups; a group is columns of node ids, top to bottom. The instructions Note sits at the
left. The script places every node (no two boxes overlap, titles included), draws the groups
around their nodes and stores a saved view (`extra.ds`) that shows the Note and as much of the
graph as fits a 1600x900 canvas at a readable zoom (>= 0.6: below about 0.57 the frontend stops
drawing node text). tests/test_ui.py checks the result in the real frontend.

    python scripts/layout_workflows.py            # rewrites workflows/*.json that have a layout here

Node sizes: the larger of the stored size and `--measured` (the frontend's sizes, which the UI
test writes to test-artifacts/ui/<name>.layout.json), so a node the frontend grows on load
still does not reach its neighbour. Development tooling: nothing in the pack imports this.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TITLE = 30  # node title bar (LiteGraph.NODE_TITLE_HEIGHT)
GAP = 40  # between nodes of a column, and between columns
PAD = 20  # inside a group, around its nodes
GROUP_TITLE = 40  # a group's title bar
GROUP_GAP = 50  # between groups
CANVAS = (1600, 900)
MARGIN = 20  # screen px around the graph in the saved view
MIN_SCALE, MAX_SCALE = 0.6, 0.8
COLORS = ["#3f789e", "#8A8", "#a1309b", "#b58b2a", "#88A", "#444"]

MODELS = "1. Models"
GENERATE = "Generate and save"
# name -> group columns: [[(title, [[node ids top to bottom], ...]), ...stacked groups], ...]
LAYOUTS = {
    "01-photomaker-v2-basic": [
        [(MODELS, [[1, 2, 3]]), ("2. Your photo -> identity", [[4], [5, 6]])],
        [("3. Prompt (trigger word after the class word)", [[7, 8, 9]])],
        [(f"4. {GENERATE}", [[10, 11, 12]])]],
    "02-photomaker-v1-basic": [
        [(MODELS, [[1, 2]]), ("2. Your photo -> identity", [[3], [4]])],
        [("3. Prompt (trigger word after the class word)", [[5, 6, 7]])],
        [(f"4. {GENERATE}", [[8, 9, 10]])]],
    "03-photomaker-v2-multi-photo": [
        [(MODELS, [[1, 2, 3]])],
        [("2. Several photos of one person -> one identity", [[4, 5, 6], [7, 8, 9, 10]])],
        [("3. Prompt", [[11, 12, 13]])],
        [(f"4. {GENERATE}", [[14, 15, 16]])]],
    "04-photomaker-stylization": [
        [(MODELS, [[1, 2, 3]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. Style preset -> prompt", [[6], [7, 8, 9]])],
        [(f"4. {GENERATE}", [[10, 11, 12]])]],
    "05-photomaker-save-identity": [
        [("1. Encode the photos once and save the identity", [[1, 2, 3], [4, 5, 6]])],
        [("2. Reuse the saved identity: no photos, no InsightFace, no vision pass",
          [[7, 8, 9], [10, 11, 12], [13, 14, 15]])]],
    "06-photomaker-rank-seeds": [
        [(MODELS, [[1, 2, 3]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. Prompt", [[6, 7, 8]])],
        [("4. Four seeds, ranked by likeness", [[9, 10], [11, 12]])]],
    "07-photomaker-identity-mixing": [
        [(MODELS, [[1, 2, 3]]), ("2. Two people's photos -> one mixed identity", [[4, 5], [6, 7, 8]])],
        [("3. Prompt", [[9, 10, 11]])],
        [(f"4. {GENERATE}", [[12, 13, 14]])]],
    "08-photomaker-two-people": [
        [(MODELS, [[1, 2, 3]]), ("2. Person A and person B", [[4, 5], [6, 7]])],
        [("3. Prompts: shared, person A, person B, negative", [[8, 15, 16, 9]])],
        [("4. Masks: A left, B right", [[17, 18, 19, 20]]),
         ("5. Each person on their half", [[21, 22, 23, 24]])],
        [(f"6. {GENERATE}", [[10, 11, 12, 13]])]],
    "09-photomaker-controlnet": [
        [(MODELS, [[1, 2, 3, 11]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. One prompt, with and without the trigger", [[6, 7], [8, 9, 10]]),
         ("4. Pose image -> ControlNet", [[12], [13]])],
        [(f"5. {GENERATE}", [[14, 15, 16, 17]])]],
    "10-photomaker-batch-identities": [
        [(MODELS, [[1, 2, 3]]), ("2. Four people, one photo each", [[4, 5], [8, 9], [6, 7], [10, 11]])],
        [("3. One identity per batch item", [[13, 14, 12]])],
        [(f"4. {GENERATE}", [[15, 16, 17]])]],
    "20-photomaker-two-people-regions": [
        [(MODELS, [[1, 2, 3]]), ("2. Person A and person B", [[4, 5], [6, 7]])],
        [("3. Regions: A left half, B right half", [[8, 9, 10, 11]])],
        [("4. One prompt, two identities", [[12, 13]])],
        [(f"5. {GENERATE}", [[14, 15, 16, 17]])]],
    "21-photomaker-pose-t2i-adapter": [
        [(MODELS, [[1, 2, 3, 7]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. Prompt", [[6, 10]])],
        [("4. Pose image -> T2I-Adapter", [[8, 9]])],
        [(f"5. {GENERATE}", [[11, 12, 13, 14]])]],
    "22-photomaker-keypoints-controlnet": [
        [(MODELS, [[1, 2, 3, 9]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. Prompt", [[6, 11]])],
        [("4. Face keypoints -> ControlNet", [[7, 8, 10]])],
        [(f"5. {GENERATE}", [[12, 13, 14, 15]])]],
    "25-photomaker-face-detailer": [
        [(MODELS, [[1, 2, 3]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. The identity's prompt", [[6, 7]])],
        [("4. The picture to fix -> Face Detailer", [[8, 9], [10, 11]])]],
    "26-photomaker-img2img": [
        [(MODELS, [[1, 2, 3]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. Prompt", [[6, 7]])],
        [("4. Start picture -> latent", [[8, 9, 10]])],
        [(f"5. {GENERATE}", [[11, 12, 13]])]],
    "27-photomaker-inpaint": [
        [(MODELS, [[1, 2, 3]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. Prompt", [[6, 7]])],
        [("4. Picture + mask -> latent", [[8, 9, 10]])],
        [(f"5. {GENERATE}", [[11, 12, 13]])]],
    "28-photomaker-full-body": [
        [(MODELS, [[1, 2, 3]]), ("2. Your photo -> identity", [[4], [5]])],
        [("3. Prompt", [[6, 7]])],
        [(f"4. {GENERATE} (small face)", [[8, 9, 10, 11]])],
        [("5. Face Detailer", [[12, 13]])]],
}


def _measured(path: Path | None) -> dict:
    """node id -> [w, h] as the frontend drew it (title excluded)."""
    if path is None or not path.is_file():
        return {}
    return {n["id"]: [n["box"][2], n["box"][3] - TITLE] for n in json.loads(path.read_text())["nodes"]}


def _place_group(title: str, columns, nodes: dict, x: float, y: float, gid: int) -> dict:
    """Put a group's columns of nodes at (x, y) (the group's top left); returns the group."""
    cx, bottom = x + PAD, y + GROUP_TITLE + PAD
    for column in columns:
        cy = y + GROUP_TITLE + PAD
        for nid in column:
            node = nodes[nid]
            node["pos"] = [cx, cy + TITLE]
            cy += TITLE + node["size"][1] + GAP
        cx += max(nodes[nid]["size"][0] for nid in column) + GAP
        bottom = max(bottom, cy - GAP)
    return {"id": gid, "title": title, "bounding": [x, y, cx - GAP + PAD - x, bottom + PAD - y],
            "color": COLORS[(gid - 1) % len(COLORS)], "font_size": 24, "flags": {}}


def _saved_view(x0: float, y0: float, x1: float, y1: float) -> dict:
    """Scale that fits the graph (clamped to a readable range), top left of the graph at the top
    left of the canvas (so the Note is on screen), centred vertically when it fits."""
    width, height = CANVAS[0] - 2 * MARGIN, CANVAS[1] - 2 * MARGIN
    scale = max(MIN_SCALE, min(MAX_SCALE, width / (x1 - x0), height / (y1 - y0)))
    spare_y = max(0.0, height / scale - (y1 - y0)) / 2
    return {"scale": round(scale, 4),
            "offset": [round(MARGIN / scale - x0, 1), round(MARGIN / scale - y0 + spare_y, 1)]}


def layout(workflow: dict, plan, measured: dict) -> dict:
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for nid, size in measured.items():
        if nid in nodes:
            nodes[nid]["size"] = [max(a, b) for a, b in zip(nodes[nid]["size"], size, strict=False)]
    notes = [n for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote")]
    placed = {nid for column in plan for _, cols in column for col in cols for nid in col}
    missing = set(nodes) - placed - {n["id"] for n in notes}
    assert not missing, f"nodes without a place in the layout: {sorted(missing)}"
    x, top, groups = 0.0, 0.0, []
    for note in notes:  # the instructions, left of everything, in reading order
        note["pos"] = [x, top + GROUP_TITLE + PAD + TITLE]
        x += note["size"][0] + GROUP_GAP
    for column in plan:
        y, width = top, 0.0
        for title, cols in column:
            group = _place_group(title, cols, nodes, x, y, len(groups) + 1)
            groups.append(group)
            y += group["bounding"][3] + GROUP_GAP
            width = max(width, group["bounding"][2])
        x += width + GROUP_GAP
    workflow["groups"] = groups
    boxes = [g["bounding"] for g in groups] + [[n["pos"][0], n["pos"][1] - TITLE, n["size"][0],
                                               n["size"][1] + TITLE] for n in notes]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    workflow.setdefault("extra", {})["ds"] = _saved_view(x0, y0, x1, y1)
    return {"size": (x1 - x0, y1 - y0), **workflow["extra"]["ds"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measured", type=Path, default=REPO / "test-artifacts" / "ui",
                    help="folder with <workflow>.layout.json from tests/test_ui.py (optional)")
    args = ap.parse_args(argv)
    for name, plan in LAYOUTS.items():
        path = REPO / "workflows" / f"{name}.json"
        workflow = json.loads(path.read_text())
        info = layout(workflow, plan, _measured(args.measured / f"{name}.layout.json"))
        path.write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")
        w, h = info["size"]
        print(f"{name}: graph {w:.0f}x{h:.0f}, scale {info['scale']}, shows "
              f"{min(1.0, (CANVAS[0] - 2 * MARGIN) / info['scale'] / w):.0%} of its width")
    return 0


if __name__ == "__main__":
    sys.exit(main())
