"""The 11 style presets of the reference demo (same names and intent; our own wording).
Each is a positive template with `{prompt}` and a negative addition."""
from __future__ import annotations

DEFAULT_STYLE = "Photographic (Default)"

_BASE_NEGATIVE = "lowres, worst quality, low quality, blurry, watermark, text"

STYLES: dict[str, tuple[str, str]] = {
    "(No style)": ("{prompt}", ""),
    "Cinematic": (
        "cinematic film still of {prompt}, shallow depth of field, anamorphic bokeh, film grain, "
        "dramatic lighting, moody colour grade",
        "cartoon, illustration, anime, painting, drawing, graphic design, " + _BASE_NEGATIVE),
    "Disney Character": (
        "a 3D animated film character, {prompt}, expressive eyes, soft studio lighting, "
        "pixar-like rendering, friendly",
        "photorealistic, photo, realism, ugly, " + _BASE_NEGATIVE),
    "Digital Art": (
        "concept art of {prompt}, digital painting, painterly brushwork, highly detailed, artstation",
        "photo, photorealistic, realism, " + _BASE_NEGATIVE),
    "Photographic (Default)": (
        "photograph of {prompt}, 50mm lens, natural skin texture, sharp focus, high detail, "
        "professional photography",
        "drawing, painting, illustration, anime, cartoon, render, 3d, " + _BASE_NEGATIVE),
    "Fantasy art": (
        "ethereal fantasy painting of {prompt}, magical atmosphere, epic, intricate details, "
        "glowing light, otherworldly",
        "photographic, realistic, realism, dull, plain, " + _BASE_NEGATIVE),
    "Neonpunk": (
        "neonpunk style {prompt}, cyberpunk city, vaporwave, neon lights, vibrant magenta and cyan, "
        "high contrast, stylish",
        "painting, drawing, illustration, muted colours, " + _BASE_NEGATIVE),
    "Enhance": (
        "breathtaking {prompt}, award-winning, professional, highly detailed",
        "ugly, deformed, noisy, distorted, grainy, " + _BASE_NEGATIVE),
    "Comic book": (
        "comic book panel of {prompt}, bold ink lines, halftone shading, vibrant colours, graphic novel",
        "photograph, photorealistic, realism, stock photo, " + _BASE_NEGATIVE),
    "Lowpoly": (
        "low-poly 3D render of {prompt}, faceted geometric shapes, flat shading, clean minimal palette",
        "noisy, sloppy, messy, grainy, photo, " + _BASE_NEGATIVE),
    "Line art": (
        "line art drawing of {prompt}, clean linework, monochrome ink, minimalist, white background",
        "photorealistic, shading, colour, gradient, 3d, " + _BASE_NEGATIVE),
}
STYLE_NAMES = list(STYLES)


def apply_style(style: str, positive: str, negative: str = "") -> tuple[str, str]:
    """Return (styled positive, styled negative). The user's text, trigger word included, is
    inserted verbatim at {prompt}, so the trigger survives templating."""
    if style not in STYLES:
        raise ValueError(f"unknown style '{style}'; choose one of: {', '.join(STYLE_NAMES)}")
    template, style_negative = STYLES[style]
    styled = template.replace("{prompt}", positive)
    parts = [p for p in (negative.strip(), style_negative) if p]
    return styled, ", ".join(parts)
