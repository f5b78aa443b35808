"""Seal images (flows/sealart.py): outlines, not text; 300 dpi; where each part is drawn;
the same style always the same bytes; a character the font lacks refused."""

from __future__ import annotations

import io
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from fontTools.pens.boundsPen import BoundsPen
from fontTools.pens.recordingPen import replayRecording
from PIL import Image

from flows import sealart
from flows.sealart import MissingGlyphs, SealFontsMissing, Style

SVG = "{http://www.w3.org/2000/svg}"
ORG = "北京某某科技发展有限公司"
ROUND = Style(kind="round", size_mm=42, colour="#d00000", rim_mm="1.2", font="serif_bold",
              inner_text="合同专用章", code="1101080012345")
SQUARE = Style(kind="square", size_mm=20, colour="#d00000", rim_mm="1.0", font="serif_bold")


def paths(svg: bytes) -> list[ET.Element]:
    return list(ET.fromstring(svg).iter(f"{SVG}path"))  # noqa: S314 - our own SVG


def centre(commands: tuple[object, ...]) -> tuple[float, float]:
    pen = BoundsPen(None)
    replayRecording(commands, pen)
    x0, y0, x1, y1 = pen.bounds
    return (x0 + x1) / 2, (y0 + y1) / 2


def chunks(png: bytes) -> dict[bytes, bytes]:
    out, at = {}, 8
    while at < len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        out[kind] = png[at + 8:at + 8 + length]
        at += 12 + length
    return out


def test_the_svg_draws_every_character_as_an_outline_sized_in_millimetres() -> None:
    svg = sealart.svg(ROUND, ORG)
    root = ET.fromstring(svg)  # noqa: S314 - our own SVG
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == (
        "42mm", "42mm", "0 0 42 42")
    text = svg.decode()
    assert "<text" not in text
    assert "font" not in text.lower()
    parts = [p.get("class") for p in paths(svg)]
    assert parts.count("rim") == 1
    assert parts.count("star") == 1
    assert parts.count("name") == len(ORG)
    assert parts.count("inner") == len("合同专用章")
    assert parts.count("code") == len("1101080012345")
    assert all(p.get("d", "").startswith("M") for p in paths(svg))
    assert root.find(f"{SVG}g").get("fill") == "#d00000"  # type: ignore[union-attr]


def test_the_png_is_300_dpi_and_42_mm_wide() -> None:
    png = sealart.png(ROUND, ORG)
    ppm = round(300 / 0.0254)
    assert chunks(png)[b"pHYs"] == struct.pack(">IIB", ppm, ppm, 1)
    image = Image.open(io.BytesIO(png))
    assert image.size == (496, 496) == (sealart.pixels(42),) * 2
    assert image.mode == "RGBA"
    assert Image.open(io.BytesIO(sealart.png(SQUARE, "李四"))).size == (236, 236)


def test_the_rim_and_the_star_are_red_and_the_corners_transparent() -> None:
    image = Image.open(io.BytesIO(sealart.png(ROUND, ORG)))
    n = image.size[0]
    rim = round((0.25 + 0.6) / 42 * n)  # the middle of the 1.2 mm rim, from the edge
    for x, y in ((n // 2, rim), (rim, n // 2), (n - 1 - rim, n // 2), (n // 2, n - 1 - rim)):
        assert image.getpixel((x, y)) == (208, 0, 0, 255), (x, y)
    assert image.getpixel((n // 2, n // 2)) == (208, 0, 0, 255)  # the star's middle
    assert image.getpixel((0, 0))[3] == 0
    assert image.getpixel((n // 2, round(n * 0.38)))[3] == 255  # the star's upper arm
    ink = sum(image.getchannel("A").histogram()[1:])
    assert 0.1 < ink / n ** 2 < 0.5


def test_the_same_style_gives_the_same_bytes_and_another_name_other_ones() -> None:
    assert sealart.svg(ROUND, ORG) == sealart.svg(ROUND, ORG)
    assert sealart.png(ROUND, ORG) == sealart.png(ROUND, ORG)
    other = "上海某某科技发展有限公司"
    assert sealart.svg(ROUND, other) != sealart.svg(ROUND, ORG)
    assert sealart.png(ROUND, other) != sealart.png(ROUND, ORG)
    assert sealart.png(SQUARE, "李四") != sealart.png(SQUARE, "张三")
    assert sealart.content_hash(ROUND, ORG) != sealart.content_hash(ROUND, other)
    blue = Style(**{**ROUND.as_dict(), "colour": "#1d3f9e"})
    assert sealart.content_hash(blue, ORG) != sealart.content_hash(ROUND, ORG)
    assert sealart.content_hash(Style.from_dict(ROUND.as_dict()), ORG) == \
        sealart.content_hash(ROUND, ORG)


def test_the_name_runs_clockwise_over_the_top_and_the_code_left_to_right_below() -> None:
    shapes = sealart._layout(ROUND, ORG)
    name = [centre(s.commands) for s in shapes if s.part == "name"]
    code = [centre(s.commands) for s in shapes if s.part == "code"]
    inner = [centre(s.commands) for s in shapes if s.part == "inner"]
    c = 21.0
    # Clockwise from the left: up the left side, over the top, down the right side.
    assert name[0][0] < c < name[-1][0]
    assert min(y for _, y in name) == pytest.approx(name[len(name) // 2][1], abs=1.0)
    assert all(y < c + 8 for _, y in name)
    assert [x for x, _ in code] == sorted(x for x, _ in code)
    assert all(y > c + 12 for _, y in code)
    ys = [y for _, y in inner]  # one line: the ink's middles differ a little
    assert max(ys) - min(ys) < 0.5
    assert min(ys) > c + 5
    assert [x for x, _ in inner] == sorted(x for x, _ in inner)


@pytest.mark.parametrize(("name", "cells"), [("李四", "李四之印"), ("欧阳修", "欧阳修印"),
                                             ("司马相如", "司马相如")])
def test_a_personal_seal_reads_from_the_top_right_down_each_column(name: str,
                                                                   cells: str) -> None:
    assert sealart.square_cells(name) == cells
    shapes = [s for s in sealart._layout(SQUARE, name) if s.part == "name"]
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = (centre(s.commands) for s in shapes)
    assert x1 > 10
    assert x2 > 10
    assert x3 < 10
    assert x4 < 10
    assert y1 < 10 < y2
    assert y3 < 10 < y4
    assert len(paths(sealart.svg(SQUARE, name))) == 5  # the border and four characters


def test_a_personal_seal_takes_two_to_four_characters() -> None:
    for name in ("李", "诸葛孔明亮"):
        with pytest.raises(ValueError, match="two to four"):
            sealart.square_cells(name)


def test_a_character_the_font_lacks_is_refused_not_drawn_as_a_box() -> None:
    assert sealart.missing_glyphs("sans", "合同😀章\ue000") == ("😀", "\ue000")
    assert sealart.missing_glyphs("serif", "合同 专用章") == ()
    with pytest.raises(MissingGlyphs) as info:
        sealart.svg(Style(**{**ROUND.as_dict(), "inner_text": "合同😀章"}), ORG)
    assert info.value.chars == ("😀",)
    with pytest.raises(MissingGlyphs):
        sealart.png(SQUARE, "李😀")


def test_every_font_draws_and_each_differently() -> None:
    drawn = {sealart.svg(Style(**{**SQUARE.as_dict(), "font": f}), "李四")
             for f in sealart.FONTS}
    assert len(drawn) == len(sealart.FONTS)


def test_colours_by_name_or_hex() -> None:
    assert sealart.colour("red") == "#d00000"
    assert sealart.colour(" Dark Red ") == "#a8000f"
    assert sealart.colour("#C00") == "#cc0000"
    assert sealart.colour("#1a2B3c") == "#1a2b3c"
    assert sealart.colour("pink") is None
    assert sealart.colour("#12345") is None


def test_a_style_a_seal_cannot_take_is_refused() -> None:
    good = ROUND.as_dict()
    for change in ({"size_mm": 20}, {"rim_mm": "2.0"}, {"font": "comic"},
                   {"colour": "red"}, {"code": "12a"}, {"inner_text": "章" * 21}):
        with pytest.raises(ValueError):  # noqa: PT011 - each names its own reason
            Style(**{**good, **change})
    with pytest.raises(ValueError, match="square"):
        Style(**{**SQUARE.as_dict(), "inner_text": "合同专用章"})


def test_missing_fonts_are_a_503_with_retry_after(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(sealart, "FONT_DIR", tmp_path)
    assert not sealart.fonts_installed()
    with pytest.raises(SealFontsMissing) as info:
        sealart.png(SQUARE, "李四")
    assert info.value.problem()["status"] == 503
    assert info.value.problem()["retry_after"] > 0
    with pytest.raises(SealFontsMissing):
        sealart.missing_glyphs("sans", "李四")
