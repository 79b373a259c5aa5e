"""The contact sheet: one HTML file, every image inline as a data: URI (no external assets), a
grid per person (prompts as rows, seeds as columns) with prompt, seed and Face Sim. score."""
from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em} h2{margin-top:1.6em;font-size:1.15em}
.grid{display:grid;grid-template-columns:repeat(var(--cols),minmax(160px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px}
figure img{width:100%;height:auto;image-rendering:auto;display:block}
figcaption{font-size:.8em;margin-top:4px;line-height:1.3}
.score{font-weight:600} .failed{border-color:#c33;color:#c33}
"""


def _data_uri(path: Path) -> str:
    ctype = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{ctype};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _score_text(score) -> str:
    return "no face" if score is None else f"{score:.3f}"


def _figure(rec: dict, out_dir: Path, has_scores: bool) -> str:
    prompt, seed = html.escape(rec["prompt"]), rec["seed"]
    if rec["status"] != "done":
        return (f'<figure class="failed" data-key="{rec["key"]}"><figcaption>{prompt}<br>seed {seed}<br>'
                f'failed: {html.escape(str(rec.get("error") or ""))[:300]}</figcaption></figure>')
    parts = []
    for rel in rec.get("outputs") or []:
        parts.append(f'<img src="{_data_uri(out_dir / rel)}" alt="{prompt} seed {seed}" '
                     f'data-file="{html.escape(rel)}">')
    score = (f'<br><span class="score" data-score="{rec.get("score")}">'
             f'Face Sim. {_score_text(rec.get("score"))}'
             f'</span>') if has_scores else ""
    return (f'<figure data-key="{rec["key"]}">{"".join(parts)}<figcaption>{prompt}<br>seed {seed}{score}'
            f'</figcaption></figure>')


def write(records: list[dict], out_dir: Path, title: str, path: Path | None = None) -> Path:
    """records: the manifest's last record of each job of this batch, in job order."""
    out_dir = Path(out_dir)
    path = Path(path or out_dir / "contact_sheet.html")
    has_scores = any(r.get("scores") for r in records)
    people: dict[str, list[dict]] = {}
    for rec in records:
        people.setdefault(rec["person"] or "(workflow's own person)", []).append(rec)
    cols = max(1, len({r["seed"] for r in records}))
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{sum(r['status'] == 'done' for r in records)} of {len(records)} jobs done"
            + (" &middot; Face Sim. = ArcFace cosine to the person's photos (1.0 = same face)"
               if has_scores else "")
            + "</p>"]
    for person, recs in people.items():
        body.append(f'<section data-person="{html.escape(person)}"><h2>{html.escape(person)}</h2>'
                    f'<div class="grid" style="--cols:{cols}">')
        body += [_figure(r, out_dir, has_scores) for r in recs]
        body.append("</div></section>")
    text = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    path.write_text(text, encoding="utf-8")
    return path
