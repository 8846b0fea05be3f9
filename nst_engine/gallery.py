"""A contact sheet of the built-in styles: one square thumbnail each, labelled with its name."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont, ImageOps

from nst_engine import styles

BACKGROUND = (24, 22, 30)
NAME_COLOR = (245, 245, 245)
CREDIT_COLOR = (170, 168, 182)


def contact_sheet(thumb: int = 256, columns: int = 4) -> Image.Image:
    """All built-in styles as a grid of `thumb`-pixel squares, each with its name and credit."""
    if thumb < 32:
        raise ValueError("thumbnails need at least 32 pixels")
    names = styles.names()
    columns = max(1, min(columns, len(names)))
    rows = math.ceil(len(names) / columns)
    gap = max(4, thumb // 24)
    name_font = ImageFont.load_default(size=max(10, thumb // 12))
    credit_font = ImageFont.load_default(size=max(8, thumb // 18))
    label = round(thumb * 0.22)
    cell_w, cell_h = thumb + gap, thumb + label + gap

    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, name in enumerate(names):
        style = styles.get(name)
        x = gap + (i % columns) * cell_w
        y = gap + (i // columns) * cell_h
        square = ImageOps.fit(styles.image(name), (thumb, thumb), Image.Resampling.LANCZOS)
        sheet.paste(square, (x, y))
        text_y = y + thumb + label * 0.12
        draw.text((x, text_y), name, fill=NAME_COLOR, font=name_font)
        credit = _shorten(draw, f"{style.artist}, {style.year}", credit_font, thumb)
        draw.text((x, text_y + label * 0.45), credit, fill=CREDIT_COLOR, font=credit_font)
    return sheet


def _shorten(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: int,
) -> str:
    """`text`, cut with an ellipsis so that it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip(" ,") + "…"
