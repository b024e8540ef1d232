"""Placeholder cover art for packs, drawn procedurally (no model weights): a palette and motif per theme
with the pack title typeset. The creative team replaces a cover by putting an image in `packs/library/covers/`
and naming it in the pack's `cover:`.

    python -m packs.make_covers            # covers for shipped packs whose file says `cover: null`
    python -m packs.make_covers --force    # redraw every shipped pack's placeholder (`<id>.jpg`)

The UI also calls `draw_cover` for a pack that has no cover yet, so every card has an image.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import random
import re
import textwrap
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from packs.loader import COVERS_DIR, LIBRARY_DIR, load_library

SIZE = 384
Color = tuple[int, int, int]


def draw_cover(pack_id: str, title: str) -> Image.Image:
    """The placeholder cover for a pack: its theme's art (a generic one for unknown ids) and the title.

    Args:
        pack_id: picks the theme; unknown ids get colours derived from the id, so covers stay distinct.
        title: typeset at the bottom.

    Returns:
        A SIZE x SIZE RGB image.
    """
    theme = THEMES.get(pack_id) or _generic_theme(pack_id)
    image = theme.art(random.Random(pack_id))
    return _typeset(image, title, theme)


# -- themes ------------------------------------------------------------------------------------------


class Theme:
    """How one pack's cover looks: the art, the title font and colours of the title panel."""

    def __init__(
        self,
        art: Callable[[random.Random], Image.Image],
        *,
        serif: bool,
        ink: Color,
        panel: Color,
        panel_alpha: int,
        label: str = "PHOTO PACK",
    ):
        self.art, self.serif, self.ink, self.panel, self.panel_alpha, self.label = (
            art,
            serif,
            ink,
            panel,
            panel_alpha,
            label,
        )


def _gradient(top: Color, bottom: Color, *, middle: Color | None = None) -> Image.Image:
    t = np.linspace(0.0, 1.0, SIZE)[:, None, None]
    a, b = np.array(top, float), np.array(bottom, float)
    if middle is None:
        rows = a + (b - a) * t
    else:
        m = np.array(middle, float)
        rows = np.where(t < 0.5, a + (m - a) * (t * 2), m + (b - m) * (t * 2 - 1))
    return Image.fromarray(np.repeat(rows, SIZE, axis=1).astype(np.uint8), "RGB")


def _radial(center: Color, edge: Color, *, cx: float = 0.5, cy: float = 0.4, reach: float = 0.75) -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    d = np.clip(np.hypot(x - cx, y - cy) / reach, 0, 1)[..., None]
    rgb = np.array(center, float) + (np.array(edge, float) - np.array(center, float)) * d**1.4
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _overlay(image: Image.Image, draw: Callable[[ImageDraw.ImageDraw], None], *, blur: float = 0) -> Image.Image:
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw(ImageDraw.Draw(layer))
    if blur:
        layer = layer.filter(ImageFilter.GaussianBlur(blur))
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def _grain(image: Image.Image, rng: random.Random, amount: float) -> Image.Image:
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, amount, (SIZE, SIZE, 1))
    return Image.fromarray(np.clip(np.asarray(image, float) + noise, 0, 255).astype(np.uint8), "RGB")


def _bust(d: ImageDraw.ImageDraw, fill: tuple[int, ...], *, x: int = SIZE // 2, top: int = 140, scale: float = 1.0):
    """A head-and-shoulders silhouette: the portrait packs' common motif."""
    r = int(52 * scale)
    d.ellipse((x - r, top, x + r, top + int(r * 2.3)), fill=fill)
    w, neck = int(150 * scale), top + int(r * 2.0)
    d.rounded_rectangle((x - int(22 * scale), neck - 10, x + int(22 * scale), neck + 30), 8, fill=fill)
    d.pieslice((x - w, neck + 18, x + w, neck + 18 + int(2 * w * 0.9)), 180, 360, fill=fill)


def _corporate(rng: random.Random) -> Image.Image:
    image = _gradient((16, 38, 64), (58, 90, 120))

    def draw(d):
        for x in range(0, SIZE, 32):
            d.line((x, 0, x, SIZE), fill=(255, 255, 255, 14))
        for y in range(0, SIZE, 32):
            d.line((0, y, SIZE, y), fill=(255, 255, 255, 14))
        d.rectangle((SIZE - 120, 40, SIZE - 36, 300), fill=(255, 255, 255, 18))
        _bust(d, (200, 214, 228, 70), x=170, top=150)

    return _overlay(image, draw)


def _couple(rng: random.Random) -> Image.Image:
    image = _gradient((252, 214, 160), (214, 106, 86), middle=(243, 162, 120))
    image = _overlay(image, lambda d: d.ellipse((112, 96, 272, 256), fill=(255, 240, 200, 170)), blur=18)

    def draw(d):
        d.ellipse((142, 126, 242, 226), fill=(255, 236, 196, 235))
        d.polygon([(0, 250), (SIZE, 232), (SIZE, SIZE), (0, SIZE)], fill=(120, 74, 52, 255))
        for _ in range(160):
            x, y = rng.randrange(SIZE), rng.randrange(236, SIZE)
            d.line((x, y, x + rng.randint(-3, 3), y - rng.randint(8, 22)), fill=(196, 140, 86, 140), width=2)
        _bust(d, (74, 40, 34, 235), x=168, top=150, scale=0.55)
        _bust(d, (74, 40, 34, 235), x=218, top=160, scale=0.5)

    return _overlay(image, draw)


def _cyberpunk(rng: random.Random) -> Image.Image:
    image = _gradient((10, 2, 32), (18, 92, 110), middle=(54, 10, 76))
    image = _overlay(image, lambda d: d.ellipse((40, 150, 360, 330), fill=(255, 40, 160, 90)), blur=40)

    def draw(d):
        x = -10
        while x < SIZE:
            w, h = rng.randint(26, 58), rng.randint(120, 300)
            d.rectangle((x, SIZE - h, x + w, SIZE), fill=(8, 6, 22, 255))
            for wy in range(SIZE - h + 8, SIZE, 12):
                for wx in range(x + 5, x + w - 5, 9):
                    if rng.random() < 0.22:
                        neon = rng.choice([(0, 240, 255, 220), (255, 60, 200, 220)])
                        d.rectangle((wx, wy, wx + 3, wy + 5), fill=neon)
            x += w + rng.randint(2, 10)
        for y in range(0, SIZE, 4):
            d.line((0, y, SIZE, y), fill=(0, 0, 0, 28))

    ring = (160, 104, 320, 264)  # behind the towers
    image = _overlay(image, lambda d: d.ellipse(ring, outline=(255, 60, 200, 200), width=10), blur=8)
    image = _overlay(image, lambda d: d.ellipse(ring, outline=(255, 190, 240, 255), width=3))
    return _overlay(image, draw)


def _fantasy(rng: random.Random) -> Image.Image:
    image = _gradient((18, 16, 60), (22, 84, 86), middle=(58, 40, 104))

    def stars(d):
        for _ in range(110):
            x, y, r = rng.randrange(SIZE), rng.randrange(230), rng.choice([0.6, 0.8, 1.2, 1.6])
            d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 246, 220, rng.randint(120, 255)))

    def land(d):
        for depth, (base, color) in enumerate([(236, (44, 48, 104)), (278, (24, 58, 70)), (318, (10, 30, 38))]):
            points, x = [(0, SIZE)], 0
            while x <= SIZE:
                points.append((x, base - rng.randint(10, 56 - depth * 10)))
                x += rng.randint(30, 70)
            points += [(SIZE, base), (SIZE, SIZE)]
            d.polygon(points, fill=(*color, 255))
        d.rectangle((92, 236, 104, 320), fill=(10, 30, 38, 255))  # a tower on the near ridge
        d.polygon([(88, 238), (98, 216), (108, 238)], fill=(10, 30, 38, 255))

    image = _overlay(image, stars)
    image = _overlay(image, lambda d: d.ellipse((244, 82, 344, 182), fill=(250, 236, 190, 60)), blur=14)
    moon = Image.new("L", image.size, 0)
    ImageDraw.Draw(moon).ellipse((258, 96, 330, 168), fill=255)
    ImageDraw.Draw(moon).ellipse((278, 86, 350, 158), fill=0)  # carves the crescent
    image.paste((250, 236, 190), mask=moon)
    return _overlay(image, land)


def _pets(rng: random.Random) -> Image.Image:
    image = _gradient((255, 214, 112), (255, 176, 102))

    def draw(d):
        for row, y in enumerate(range(-10, SIZE, 46)):
            for x in range(-10 + (row % 2) * 23, SIZE, 46):
                d.ellipse((x, y, x + 12, y + 12), fill=(255, 255, 255, 70))
        paws = [(118, 212, 1.2, (38, 70, 83)), (262, 172, 0.8, (231, 111, 81)), (286, 298, 1.0, (42, 157, 143))]
        for cx, cy, s, color in paws:
            d.ellipse((cx - 26 * s, cy - 18 * s, cx + 26 * s, cy + 24 * s), fill=(*color, 230))
            for dx, dy in [(-30, -34), (-10, -46), (12, -46), (32, -34)]:
                x, y = cx + dx * s, cy + dy * s
                d.ellipse((x - 9 * s, y - 11 * s, x + 9 * s, y + 11 * s), fill=(*color, 230))
        d.polygon([(52, 340), (80, 302), (108, 340)], fill=(231, 111, 81, 255))  # a party hat
        d.ellipse((74, 294, 86, 306), fill=(255, 255, 255, 255))

    return _overlay(image, draw)


def _studio(rng: random.Random) -> Image.Image:
    image = _radial((132, 126, 120), (18, 18, 20), cy=0.38, reach=0.8)
    rim = _overlay(image, lambda d: _bust(d, (255, 236, 210, 200), x=SIZE // 2 - 4, top=127, scale=1.1), blur=2)
    return _overlay(rim, lambda d: _bust(d, (22, 20, 22, 255), top=130, scale=1.1))


def _vintage(rng: random.Random) -> Image.Image:
    image = _radial((226, 204, 168), (120, 92, 64), cy=0.45, reach=0.85)
    image = _overlay(image, lambda d: _bust(d, (92, 66, 44, 200), top=140, scale=0.95))
    image = _grain(image, rng, 9)

    def film(d):
        for x0 in (0, SIZE - 30):
            d.rectangle((x0, 0, x0 + 30, SIZE), fill=(24, 18, 12, 255))
            for y in range(8, SIZE, 28):
                d.rounded_rectangle((x0 + 8, y, x0 + 22, y + 16), 3, fill=(232, 214, 180, 255))
        for _ in range(6):
            x = rng.randrange(40, SIZE - 40)
            d.line((x, 0, x + rng.randint(-6, 6), SIZE), fill=(255, 245, 225, 40))

    return _overlay(image, film)


def _watercolour(rng: random.Random) -> Image.Image:
    image = _grain(Image.new("RGB", (SIZE, SIZE), (250, 246, 238)), rng, 3)
    for color in [(246, 190, 205), (178, 208, 240), (192, 230, 208), (250, 222, 168), (214, 196, 240)] * 2:
        cx, cy, r = rng.randint(30, 354), rng.randint(130, 330), rng.randint(50, 100)
        p1, p2 = rng.uniform(0, 6.3), rng.uniform(0, 6.3)
        angles = np.linspace(0, 2 * np.pi, 72)
        wobble = 1 + 0.14 * np.sin(3 * angles + p1) + 0.07 * np.sin(7 * angles + p2)
        points = list(zip(cx + r * wobble * np.cos(angles), cy + r * 0.8 * wobble * np.sin(angles), strict=True))
        wash = Image.new("RGB", image.size, (255, 255, 255))
        edge = tuple(int(c * 0.85) for c in color)
        ImageDraw.Draw(wash).polygon(points, fill=color, outline=edge, width=3)
        # pigment layers multiply, as washes of watercolour do
        image = ImageChops.multiply(image, wash.filter(ImageFilter.GaussianBlur(rng.uniform(2, 3.5))))
    return image


def _generic(seed: int) -> Callable[[random.Random], Image.Image]:
    hue = seed % 360

    def art(rng: random.Random) -> Image.Image:
        top, bottom = _hsv(hue, 0.55, 0.35), _hsv((hue + 40) % 360, 0.45, 0.75)
        return _overlay(_gradient(top, bottom), lambda d: _bust(d, (255, 255, 255, 60)))

    return art


def _hsv(hue: float, saturation: float, value: float) -> Color:
    return (
        Image.new("HSV", (1, 1), (int(hue / 360 * 255), int(saturation * 255), int(value * 255)))
        .convert("RGB")
        .getpixel((0, 0))
    )


def _generic_theme(pack_id: str) -> Theme:
    seed = int(hashlib.sha256(pack_id.encode()).hexdigest()[:8], 16)
    return Theme(_generic(seed), serif=False, ink=(255, 255, 255), panel=(0, 0, 0), panel_alpha=110)


THEMES: dict[str, Theme] = {
    "corporate-headshots": Theme(_corporate, serif=False, ink=(255, 255, 255), panel=(8, 22, 40), panel_alpha=170),
    "couple-portraits": Theme(_couple, serif=True, ink=(255, 244, 226), panel=(70, 34, 28), panel_alpha=150),
    "cyberpunk-city": Theme(_cyberpunk, serif=False, ink=(120, 250, 255), panel=(6, 2, 20), panel_alpha=190),
    "fantasy": Theme(_fantasy, serif=True, ink=(236, 204, 120), panel=(8, 16, 24), panel_alpha=150),
    "pets-in-costumes": Theme(_pets, serif=False, ink=(38, 70, 83), panel=(255, 250, 240), panel_alpha=220),
    "studio-portrait": Theme(_studio, serif=True, ink=(240, 232, 220), panel=(10, 10, 10), panel_alpha=120),
    "vintage-film": Theme(_vintage, serif=True, ink=(62, 40, 22), panel=(236, 220, 190), panel_alpha=210),
    "watercolour": Theme(_watercolour, serif=True, ink=(70, 74, 90), panel=(252, 249, 243), panel_alpha=200),
}


# -- title -------------------------------------------------------------------------------------------


@functools.cache
def _font(serif: bool, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    names = ["DejaVuSerif-Bold.ttf", "LiberationSerif-Bold.ttf"] if serif else []
    for name in [*names, "DejaVuSans-Bold.ttf", "LiberationSans-Bold.ttf"]:
        try:
            return ImageFont.truetype(name, size)  # Pillow also looks in the system font folders
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _fit(title: str, serif: bool) -> tuple[list[str], ImageFont.FreeTypeFont | ImageFont.ImageFont, int]:
    """One line when it fits at a good size, else two lines; the largest size that fits the width."""
    for lines, smallest in (([title], 26), (textwrap.wrap(title, 18)[:2], 18)):
        for size in range(34, smallest - 1, -2):
            font = _font(serif, size)
            if max(font.getlength(line) for line in lines) <= SIZE - 56:
                return lines, font, size
    return lines, font, size


def _typeset(image: Image.Image, title: str, theme: Theme) -> Image.Image:
    """A masthead at the top: the gallery lays its own caption over the bottom of each card."""
    lines, font, size = _fit(title, theme.serif)
    label_font = _font(False, 12)
    line_h = int(size * 1.18)
    panel_h = 50 + line_h * len(lines) + 14

    def draw(d: ImageDraw.ImageDraw):
        d.rectangle((0, 0, SIZE, panel_h), fill=(*theme.panel, theme.panel_alpha))
        d.text((28, 20), " ".join(theme.label), font=label_font, fill=(*theme.ink, 190))
        d.line((28, 40, 64, 40), fill=(*theme.ink, 190), width=2)
        for i, line in enumerate(lines):
            d.text((28, 50 + i * line_h), line, font=font, fill=(*theme.ink, 255))

    return _overlay(image, draw)


# -- script ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="redraw every shipped pack's placeholder cover")
    args = parser.parse_args(argv)
    COVERS_DIR.mkdir(exist_ok=True)
    for pack in load_library(LIBRARY_DIR).values():
        name = f"{pack.id}.jpg"
        if pack.cover is not None and not (args.force and pack.cover == name):
            continue
        draw_cover(pack.id, pack.title).save(COVERS_DIR / name, quality=86, optimize=True, progressive=True)
        path = LIBRARY_DIR / f"{pack.id}.yaml"
        if path.exists() and pack.cover is None:
            # edit the one line so the file keeps its layout and comments
            text = re.sub(r"(?m)^cover:.*$", f"cover: {name}", path.read_text(encoding="utf-8"), count=1)
            path.write_text(text, encoding="utf-8")
        print(f"{name}: {(COVERS_DIR / name).stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
