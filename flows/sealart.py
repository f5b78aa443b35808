"""Draw seal images (SPEC 10.1.2, 10.2.1): a round organisation seal and a square personal
one, as SVG and as a 300 dpi PNG from the same geometry.

Pure: no I/O but reading the font files. Every shape is laid out once, in millimetres
with y pointing down (SVG's way), as pen commands (fontTools' ``RecordingPen``); the SVG
writes them as ``<path>`` outlines (``SVGPathPen``: the characters are the font's glyph
outlines, so the image looks the same where the font is missing) and the PNG has
FreeType fill them (``FreeTypePen``, non-zero winding, anti-aliased) onto a transparent
canvas. The same style and text always give the same bytes.

The fonts are Noto Sans CJK SC and Noto Serif CJK SC, regular and bold, from Debian's
``fonts-noto-cjk`` (SIL Open Font License 1.1). A parsed font is kept for the process:
loading one costs about a tenth of a second, drawing a seal a few milliseconds more
than that. Drawing is serialised by one lock, as fontTools reads a font's tables lazily
and is not made for threads; callers on an event loop run it in an executor.

This is a seal *image*: not a GB/T 38540 signed electronic seal. Its content hash
(``content_hash``) names what it shows, so a signer can be added later.
"""

from __future__ import annotations

import functools
import io
import math
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
from PIL import Image

from engine import EngineError
from engine.canonical import content_hash as canonical_hash

# fontTools (and FreeType through it) is imported where a seal is drawn or a font read,
# not with the module: every flowctl command loads the flows' modules, an audit too,
# and they cost it a twentieth of a second.
if TYPE_CHECKING:
    from fontTools.pens.basePen import AbstractPen
    from fontTools.ttLib import TTFont

# Debian's fonts-noto-cjk puts them here (.ci/run installs it where it is missing).
FONT_DIR = Path("/usr/share/fonts/opentype/noto")
FONT_LICENCE = "SIL Open Font License 1.1"


@attrs.frozen
class FontFile:
    """A font collection file, and the family of the simplified Chinese face in it."""

    filename: str
    family: str


FONTS: Mapping[str, FontFile] = {
    "sans": FontFile("NotoSansCJK-Regular.ttc", "Noto Sans CJK SC"),
    "sans_bold": FontFile("NotoSansCJK-Bold.ttc", "Noto Sans CJK SC"),
    "serif": FontFile("NotoSerifCJK-Regular.ttc", "Noto Serif CJK SC"),
    "serif_bold": FontFile("NotoSerifCJK-Bold.ttc", "Noto Serif CJK SC"),
}
KINDS = ("round", "square")
SIZES: Mapping[str, tuple[int, ...]] = {"round": (38, 40, 42), "square": (18, 20, 22)}
RIMS = ("0.8", "1.0", "1.2", "1.4", "1.6")
# Named colours; any other is written #rrggbb.
COLOURS: Mapping[str, str] = {"red": "#d00000", "dark_red": "#a8000f", "blue": "#1d3f9e",
                              "black": "#1a1a1a"}
DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "round": {"size_mm": 42, "colour": "#d00000", "rim_mm": "1.2", "font": "serif_bold"},
    "square": {"size_mm": 20, "colour": "#d00000", "rim_mm": "1.0", "font": "serif_bold"},
}
DPI = 300
# The drawing's own version: bump it when the same style and text come out differently
# (a layout fix), so that caches holding the old image (its ETag) ask again.
RENDERER = 1
MAX_NAME = 40  # characters along the upper rim: more would be slivers
MAX_INNER_TEXT = 20
MAX_CODE = 20
# How a personal name fills the four cells of a square seal.
NAME_SUFFIX = {2: "之印", 3: "印", 4: ""}

_COLOUR = re.compile(r"^#[0-9a-f]{6}$")
_KAPPA = 0.5522847498  # a quarter circle as one cubic Bezier
_lock = threading.Lock()


class SealFontsMissing(EngineError, FileNotFoundError):
    """The font files are not on this machine: no seal can be drawn until they are."""

    status: ClassVar[int] = 503
    error_id: ClassVar[str] = "seal_fonts_missing"
    zh: ClassVar[str] = "印章字体未安装，暂时无法生成印章图片"
    en: ClassVar[str] = "The seal fonts are not installed; seal images cannot be drawn now"

    # A font is installed by an operator, not in seconds.
    RETRY_AFTER: ClassVar[int] = 3600

    def __init__(self) -> None:
        super().__init__(retry_after=self.RETRY_AFTER)


class MissingGlyphs(ValueError):
    """Characters the font has no glyph for: a seal would show empty boxes."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = tuple(dict.fromkeys(chars))
        super().__init__("no glyph for " + " ".join(self.chars))


@attrs.frozen
class Style:
    """How a seal looks. ``rim_mm`` is text (``"1.2"``), so its hash never meets a float."""

    kind: str
    size_mm: int
    colour: str
    rim_mm: str
    font: str
    inner_text: str | None = None
    code: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind is one of {KINDS}")
        if self.size_mm not in SIZES[self.kind]:
            raise ValueError(f"a {self.kind} seal is {SIZES[self.kind]} mm")
        if not _COLOUR.match(self.colour):
            raise ValueError("colour is #rrggbb")
        if self.rim_mm not in RIMS:
            raise ValueError(f"rim is one of {RIMS} mm")
        if self.font not in FONTS:
            raise ValueError(f"font is one of {sorted(FONTS)}")
        if self.kind == "square" and (self.inner_text or self.code):
            raise ValueError("a square seal has no inner text or code")
        if self.inner_text is not None and len(self.inner_text) > MAX_INNER_TEXT:
            raise ValueError(f"inner text has at most {MAX_INNER_TEXT} characters")
        if self.code is not None and not (self.code.isascii() and self.code.isdigit()
                                          and len(self.code) <= MAX_CODE):
            raise ValueError(f"code is at most {MAX_CODE} digits")

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Style:
        return cls(kind=str(data["kind"]), size_mm=int(data["size_mm"]),
                   colour=str(data["colour"]), rim_mm=str(data["rim_mm"]),
                   font=str(data["font"]), inner_text=data.get("inner_text") or None,
                   code=data.get("code") or None)


def etag(content_hash: str) -> str:
    """The HTTP entity tag of a seal's images: what it shows, as this drawing draws it."""
    return f'"{content_hash}.r{RENDERER}"'


def content_hash(style: Style, text: str) -> str:
    """SHA-256 (hex) of the canonical style and the text the seal shows: what it shows."""
    return canonical_hash({"style": style.as_dict(), "text": text})


def colour(value: str) -> str | None:
    """A colour's name or ``#rrggbb`` (``#RGB`` too) as ``#rrggbb``; None if it is neither."""
    text = value.strip().lower().replace(" ", "_")
    if text in COLOURS:
        return COLOURS[text]
    if re.fullmatch(r"#[0-9a-f]{3}", text):
        text = "#" + "".join(ch * 2 for ch in text[1:])
    return text if _COLOUR.match(text) else None


def square_cells(name: str) -> str:
    """The four characters of a personal seal in reading order (right column, top to
    bottom, then the left one): the name, filled with 之印 or 印."""
    if len(name) not in NAME_SUFFIX:
        raise ValueError("a personal seal takes a name of two to four characters")
    return name + NAME_SUFFIX[len(name)]


def seal_text(kind: str, text: str) -> str:
    """Every character the seal's name part shows (a personal name with its 印)."""
    return square_cells(text) if kind == "square" else text


# -- fonts -----------------------------------------------------------------------------

@attrs.frozen
class _Face:
    font: TTFont
    cmap: Mapping[int, str]
    glyphs: Any  # fontTools' glyph set

    def advance(self, ch: str) -> float:
        return float(self.glyphs[self.cmap[ord(ch)]].width)


def _family(font: TTFont) -> str:
    name = font["name"]
    return str(name.getDebugName(16) or name.getDebugName(1) or "")


def _face(font: str) -> _Face:
    """The font's simplified Chinese face, parsed once per process."""
    path = FONT_DIR / FONTS[font].filename
    if not path.is_file():
        raise SealFontsMissing()
    face = _load(path, FONTS[font].family)
    if face is None:
        raise SealFontsMissing()
    return face


@functools.cache
def _load(path: Path, family: str) -> _Face | None:
    from fontTools.ttLib import TTCollection

    collection = TTCollection(str(path), lazy=True)
    for face in collection.fonts:
        if _family(face).startswith(family):
            return _Face(face, face.getBestCmap(), face.getGlyphSet())
    return None


def fonts_installed() -> bool:
    """Whether every font's file is where the renderer looks."""
    return all((FONT_DIR / f.filename).is_file() for f in FONTS.values())


def missing_glyphs(font: str, text: str) -> tuple[str, ...]:
    """The characters of ``text`` the font has no glyph for (spaces need none)."""
    with _lock:
        cmap = _face(font).cmap
    return tuple(dict.fromkeys(ch for ch in text if not ch.isspace() and ord(ch) not in cmap))


# -- geometry, in millimetres, y down ----------------------------------------------------

@attrs.frozen
class _Shape:
    part: str  # rim | star | name | inner | code
    commands: tuple[Any, ...]


# The ideographic em box of Noto CJK: 1000 units, baseline 120 above its bottom.
_EM_BOTTOM, _EM_TOP = -120.0, 880.0


def _glyph(face: _Face, ch: str, *, width: float, height: float, x: float, y: float,
           angle: float = 0.0) -> tuple[Any, ...] | None:
    """The outline of ``ch``, its em box (advance by em height) scaled to width x height,
    centred on (x, y) and turned ``angle`` radians clockwise."""
    if ch.isspace():
        return None
    from fontTools.misc.transform import Transform
    from fontTools.pens.recordingPen import RecordingPen
    from fontTools.pens.transformPen import TransformPen

    advance = face.advance(ch)
    em = _EM_TOP - _EM_BOTTOM
    t = Transform().translate(x, y).rotate(angle).scale(width / advance, -height / em) \
        .translate(-advance / 2, -(_EM_TOP + _EM_BOTTOM) / 2)
    pen = RecordingPen()
    face.glyphs[face.cmap[ord(ch)]].draw(TransformPen(pen, t))
    return tuple(pen.value) or None


def _circle(pen: AbstractPen, cx: float, cy: float, r: float, *, clockwise: bool) -> None:
    """A circle as four cubic Beziers, from the top, clockwise as seen (y down) or not."""
    sign = 1.0 if clockwise else -1.0
    k = r * _KAPPA

    def point(quarter: int) -> tuple[float, float, float, float]:
        # The point at this quarter turn from the top, and the direction of travel there.
        a = sign * quarter * math.pi / 2
        return (cx + r * math.sin(a), cy - r * math.cos(a),
                sign * math.cos(a), sign * math.sin(a))

    x, y, dx, dy = point(0)
    pen.moveTo((x, y))
    for quarter in range(1, 5):
        x2, y2, dx2, dy2 = point(quarter)
        pen.curveTo((x + k * dx, y + k * dy), (x2 - k * dx2, y2 - k * dy2), (x2, y2))
        x, y, dx, dy = x2, y2, dx2, dy2
    pen.closePath()


def _ring(cx: float, cy: float, outer: float, inner: float) -> tuple[Any, ...]:
    from fontTools.pens.recordingPen import RecordingPen

    pen = RecordingPen()
    _circle(pen, cx, cy, outer, clockwise=True)
    _circle(pen, cx, cy, inner, clockwise=False)
    return tuple(pen.value)


def _frame(x0: float, y0: float, x1: float, y1: float, width: float) -> tuple[Any, ...]:
    from fontTools.pens.recordingPen import RecordingPen

    pen = RecordingPen()
    for (a, b, c, d), clockwise in (((x0, y0, x1, y1), True),
                                    ((x0 + width, y0 + width, x1 - width, y1 - width), False)):
        corners = [(a, b), (c, b), (c, d), (a, d)]
        if not clockwise:
            corners = [corners[0], *reversed(corners[1:])]
        pen.moveTo(corners[0])
        for p in corners[1:]:
            pen.lineTo(p)
        pen.closePath()
    return tuple(pen.value)


def _star(cx: float, cy: float, r: float) -> tuple[Any, ...]:
    """A five-pointed star, one point up, its inner corners where a regular one has them."""
    from fontTools.pens.recordingPen import RecordingPen

    inner = r * math.sin(math.radians(18)) / math.sin(math.radians(126))
    pen = RecordingPen()
    for i in range(10):
        radius = r if i % 2 == 0 else inner
        a = math.radians(36 * i)
        p = (cx + radius * math.sin(a), cy - radius * math.cos(a))
        pen.moveTo(p) if i == 0 else pen.lineTo(p)
    pen.closePath()
    return tuple(pen.value)


def _round(style: Style, text: str, face: _Face) -> list[_Shape]:
    s = float(style.size_mm)
    c = s / 2
    outer = c - 0.25  # room for the anti-aliased edge
    inner = outer - float(style.rim_mm)
    gap = 0.025 * s + 0.2
    shapes = [_Shape("rim", _ring(c, c, outer, inner)), _Shape("star", _star(c, c, s / 6))]

    # The name: clockwise along the upper rim, each character's top facing out.
    height = 0.165 * s
    radius = inner - gap - height / 2
    n = len(text)
    natural = 0.8 * height / radius
    span = min(math.radians(230 if style.code else 240),
               max(n * natural, min(math.pi, n * math.radians(45))))
    step = span / n
    width = min(0.8 * height, 0.9 * (radius - height / 2) * step)
    for i, ch in enumerate(text):
        angle = -span / 2 + step * (i + 0.5)
        commands = _glyph(face, ch, width=width, height=height,
                          x=c + radius * math.sin(angle), y=c - radius * math.cos(angle),
                          angle=angle)
        if commands:
            shapes.append(_Shape("name", commands))

    # The inner text: one horizontal line below the star.
    if style.inner_text:
        h = 0.1 * s
        w = min(0.9 * h, 0.52 * s / len(style.inner_text))
        y = c + 0.205 * s
        for i, ch in enumerate(style.inner_text):
            commands = _glyph(face, ch, width=w, height=h, y=y,
                              x=c + (i - (len(style.inner_text) - 1) / 2) * w * 1.05)
            if commands:
                shapes.append(_Shape("inner", commands))

    # The code: along the lower rim, left to right, each digit's top facing the centre.
    if style.code:
        h = 0.06 * s
        r = inner - gap - h / 2
        natural = 0.65 * h / r
        span = min(math.radians(90), len(style.code) * natural)
        step = span / len(style.code)
        w = min(0.55 * h, 0.85 * r * step)
        for i, ch in enumerate(style.code):
            angle = math.pi + span / 2 - step * (i + 0.5)
            commands = _glyph(face, ch, width=w, height=h, x=c + r * math.sin(angle),
                              y=c - r * math.cos(angle), angle=angle - math.pi)
            if commands:
                shapes.append(_Shape("code", commands))
    return shapes


def _square(style: Style, text: str, face: _Face) -> list[_Shape]:
    s = float(style.size_mm)
    margin = 0.2
    rim = float(style.rim_mm)
    shapes = [_Shape("rim", _frame(margin, margin, s - margin, s - margin, rim))]
    pad = 0.04 * s
    gutter = 0.03 * s
    left = margin + rim + pad
    cell = (s - 2 * left - gutter) / 2
    # Traditional order: the right column first, top to bottom, then the left one.
    places = [(1, 0), (1, 1), (0, 0), (0, 1)]
    for ch, (col, row) in zip(square_cells(text), places, strict=True):
        commands = _glyph(face, ch, width=cell, height=cell,
                          x=left + col * (cell + gutter) + cell / 2,
                          y=left + row * (cell + gutter) + cell / 2)
        if commands:
            shapes.append(_Shape("name", commands))
    return shapes


def _layout(style: Style, text: str) -> list[_Shape]:
    face = _face(style.font)
    missing = [ch for ch in seal_text(style.kind, text) + (style.inner_text or "") +
               (style.code or "") if not ch.isspace() and ord(ch) not in face.cmap]
    if missing:
        raise MissingGlyphs(missing)
    return _round(style, text, face) if style.kind == "round" else _square(style, text, face)


# -- output -----------------------------------------------------------------------------

def _number(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def svg(style: Style, text: str) -> bytes:
    """The seal as SVG: sized in millimetres, a viewBox in millimetres, a ``<path>`` per
    shape (the rim, the star, each character), no text and no font reference."""
    from fontTools.pens.recordingPen import replayRecording
    from fontTools.pens.svgPathPen import SVGPathPen

    with _lock:
        shapes = _layout(style, text)
    s = style.size_mm
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<svg xmlns="http://www.w3.org/2000/svg" width="{s}mm" height="{s}mm" '
             f'viewBox="0 0 {s} {s}">',
             f'<g fill="{style.colour}" fill-rule="nonzero">']
    for shape in shapes:
        pen = SVGPathPen(None, ntos=_number)
        replayRecording(shape.commands, pen)
        lines.append(f'<path class="{shape.part}" d="{pen.getCommands()}"/>')
    lines += ["</g>", "</svg>", ""]
    return "\n".join(lines).encode("utf-8")


def pixels(size_mm: int) -> int:
    """The side of the PNG, in pixels at 300 dpi."""
    return round(size_mm / 25.4 * DPI)


def png(style: Style, text: str) -> bytes:
    """The seal as PNG at 300 dpi (its pHYs chunk says so): the colour on a transparent
    ground, its alpha the shapes' anti-aliased coverage."""
    from fontTools.pens.freetypePen import FreeTypePen
    from fontTools.pens.recordingPen import replayRecording

    n = pixels(style.size_mm)
    k = n / style.size_mm
    with _lock:
        shapes = _layout(style, text)
        pen = FreeTypePen(None)
        for shape in shapes:
            replayRecording(shape.commands, pen)
        # Millimetres with y down to FreeType's pixels with y up.
        coverage, _ = pen.buffer(width=n, height=n, transform=(k, 0, 0, -k, 0, n))
    rgb = tuple(int(style.colour[i:i + 2], 16) for i in (1, 3, 5))
    image = Image.new("RGBA", (n, n), (*rgb, 0))
    image.putalpha(Image.frombuffer("L", (n, n), coverage))
    out = io.BytesIO()
    image.save(out, "PNG", dpi=(DPI, DPI), compress_level=6)
    return out.getvalue()
