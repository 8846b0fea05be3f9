"""Draw docs/apps-select.png: a rendering (not a screenshot) of the "Stylize" app's private
answer with its style select opened, from the very text and options the bot sends
(`bot.apps.PICK` and `bot.apps.style_options`), for a server with one style of its own.

    python docs/render_select.py        (needs the DejaVu fonts)
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bot.apps import PICK, style_options

FONTS = Path("/usr/share/fonts/truetype/dejavu")
OUT = Path(__file__).resolve().parent / "apps-select.png"
WIDTH, ROW, PAD = 560, 44, 16
BACK, PANEL, LINE = (49, 51, 56), (43, 45, 49), (30, 31, 34)
TEXT, MUTED, ACCENT = (219, 222, 225), (148, 155, 164), (88, 101, 242)


def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(
        str(FONTS / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size
    )


def main() -> None:
    options = style_options(["our-look"])
    height = 150 + ROW * len(options) + 40
    img = Image.new("RGB", (WIDTH, height), BACK)
    draw = ImageDraw.Draw(img)
    draw.text((PAD, 12), "stylebot", font=font(15, bold=True), fill=(255, 255, 255))
    draw.text((PAD + 80, 14), "Only you can see this", font=font(12), fill=MUTED)
    draw.text((PAD, 40), PICK.removeprefix("🎨 "), font=font(13), fill=TEXT)
    top = 72
    draw.rounded_rectangle((PAD, top, WIDTH - PAD, top + 40), 4, fill=LINE, outline=ACCENT)
    draw.text((PAD + 12, top + 12), "Pick a style", font=font(14), fill=MUTED)
    top += 48
    box = (PAD, top, WIDTH - PAD, top + ROW * len(options) + 8)
    draw.rounded_rectangle(box, 4, fill=PANEL, outline=LINE)
    for i, option in enumerate(options):
        y = top + 4 + i * ROW
        draw.text((PAD + 12, y + 4), option.label, font=font(14), fill=TEXT)
        draw.text((PAD + 12, y + 23), option.description or "", font=font(11), fill=MUTED)
    draw.text(
        (PAD, height - 28),
        "A rendering of the bot's select (its real options), not a screenshot.",
        font=font(11),
        fill=MUTED,
    )
    img.save(OUT, optimize=True)


if __name__ == "__main__":
    main()
