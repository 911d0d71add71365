"""The evidence PDF's building blocks (fpdf2): the document with its fonts and footer (the trial id, the
generated time, how to verify, page n of N), headings, paragraphs, bullets, a loud notice, tables that wrap
and repeat their headings, charts kept with their titles; and numbers as text. The pages are in pdf.py.

The font is DejaVu Sans as matplotlib ships it (fpdf2's core fonts cannot print Δ, ±, µ, €, ≥, −), so the
PDF needs no system font.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
SANS, MONO = "dejavu", "dejavu-mono"
GREY = (90, 90, 90)
LIGHT = (238, 238, 238)
RED = (198, 40, 40)
VERIFY = "verify: biopilot report verify DIR"


def rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


# -- numbers as text ----------------------------------------------------------------------------------
def num(v: float | None, digits: int = 4) -> str:
    """A number with `digits` significant digits (thousands separated above 10^digits), a real minus
    sign, '—' for none."""
    if v is None:
        return "—"
    text = f"{v:,.0f}" if abs(v) >= 10**digits else f"{v:.{digits}g}"
    return text.replace("-", "−")


def pct(v: float | None) -> str:
    return "—" if v is None else f"{v:+.1f} %".replace("-", "−")


def pval(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def interval(low: float | None, high: float | None, unit: str = "", *, as_pct: bool = False) -> str:
    if low is None or high is None:
        return "—"
    if as_pct:
        return f"{pct(low)} to {pct(high)}"
    return f"{num(low)} to {num(high)}{' ' + unit if unit else ''}"


def when(t: datetime | None) -> str:
    return "—" if t is None else t.strftime("%Y-%m-%d %H:%M UTC")


def coverage(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


# -- the document -------------------------------------------------------------------------------------
class Document(FPDF):
    """An A4 page set in DejaVu Sans with the pack's footer, and the blocks the pages are made of."""

    def __init__(self, trial_id: str, generated: datetime) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.trial_id = trial_id
        self.generated = generated
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(True, margin=18)
        self.add_font(SANS, "", FONT_DIR / "DejaVuSans.ttf")
        self.add_font(SANS, "B", FONT_DIR / "DejaVuSans-Bold.ttf")
        self.add_font(SANS, "I", FONT_DIR / "DejaVuSans-Oblique.ttf")
        self.add_font(MONO, "", FONT_DIR / "DejaVuSansMono.ttf")
        self.set_creation_date(generated)
        self.set_creator("BioPilot")
        self.set_title(f"Evidence pack of trial {trial_id}")
        self.set_font(SANS, size=9)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(SANS, size=7)
        self.set_text_color(*GREY)
        left = f"Trial {self.trial_id} · evidence pack generated {when(self.generated)} · {VERIFY}"
        self.cell(self.epw - 25, 5, left)
        self.cell(25, 5, f"page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0, 0, 0)

    # building blocks
    def h1(self, text: str) -> None:
        self.start_section(text)
        self.set_font(SANS, "B", 15)
        self.multi_cell(0, 8, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)
        self.set_font(SANS, size=9)

    def h2(self, text: str) -> None:
        if self.will_page_break(20):
            self.add_page()
        self.ln(2)
        self.set_font(SANS, "B", 11)
        self.multi_cell(0, 6, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)
        self.set_font(SANS, size=9)

    def para(
        self, text: str, size: float = 9, style: str = "", colour: tuple[int, int, int] | None = None
    ) -> None:
        self.set_font(SANS, style, size)
        if colour:
            self.set_text_color(*colour)
        self.multi_cell(0, size * 0.5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
        self.set_text_color(0, 0, 0)
        self.set_font(SANS, size=9)
        self.ln(1)

    def bullets(self, items: Sequence[str], size: float = 8.5) -> None:
        self.set_font(SANS, size=size)
        for item in items:
            self.set_x(self.l_margin)
            self.cell(5, size * 0.5, "•")
            self.multi_cell(0, size * 0.5, item, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
        self.set_font(SANS, size=9)
        self.ln(1)

    def notice(self, text: str) -> None:
        """A loud boxed notice: white bold on red."""
        self.set_fill_color(*RED)
        self.set_text_color(255, 255, 255)
        self.set_font(SANS, "B", 11)
        self.multi_cell(0, 6, text, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L", padding=3)
        self.set_fill_color(255, 255, 255)
        self.set_text_color(0, 0, 0)
        self.set_font(SANS, size=9)
        self.ln(3)

    def grid(
        self,
        headings: Sequence[str],
        rows: Sequence[Sequence[Any]],
        widths: Sequence[float],
        *,
        size: float = 7.5,
        align: Sequence[str] | None = None,
        mono: Sequence[int] = (),
        styles: Callable[[int, int], FontFace | None] | None = None,
        width: float | None = None,
    ) -> None:
        """A table across the text width, or `width` mm (widths are relative); cells wrap (long words at
        characters); headings repeat on a new page. `mono`: columns set in the monospaced font (hashes)."""
        self.set_font(SANS, size=size)
        total = sum(widths)
        width = width or self.epw
        aligns = list(align or ["L"] * len(headings))
        with self.table(
            col_widths=[w / total * width for w in widths],
            width=width,
            text_align=aligns,
            line_height=size * 0.48,
            padding=(0.8, 1.0),
            headings_style=FontFace(emphasis="B", fill_color=LIGHT),
            repeat_headings=1,
            borders_layout="HORIZONTAL_LINES",
            v_align="TOP",
            align="LEFT",
        ) as t:
            head = t.row()
            for h in headings:
                head.cell(h)
            for i, row in enumerate(rows):
                r = t.row()
                for j, v in enumerate(row):
                    style = styles(i, j) if styles else None
                    if j in mono:
                        style = FontFace(
                            family=MONO, size_pt=size - 0.5, color=style.color if style else None
                        )
                    r.cell("" if v is None else str(v), style=style)
        self.set_font(SANS, size=9)
        self.ln(2)

    def kv(self, rows: Sequence[tuple[str, str]], size: float = 8.5, mono: Sequence[str] = ()) -> None:
        """Two columns, key in bold: a definition list."""
        self.set_font(SANS, size=size)
        with self.table(
            col_widths=[0.27 * self.epw, 0.73 * self.epw],
            width=self.epw,
            text_align=["L", "L"],
            line_height=size * 0.5,
            padding=(0.6, 1.0),
            first_row_as_headings=False,
            borders_layout="NONE",
            v_align="TOP",
        ) as t:
            for k, v in rows:
                r = t.row()
                r.cell(k, style=FontFace(emphasis="B"))
                r.cell(v, style=FontFace(family=MONO, size_pt=size - 0.5) if k in mono else None)
        self.set_font(SANS, size=9)
        self.ln(1)

    def figure(self, png: bytes, title: str | None = None, width: float | None = None) -> None:
        """A chart across the text width (or `width` mm), on a new page when it does not fit, its title
        kept with it."""
        w = width or self.epw
        px_w, px_h = struct.unpack(">II", png[16:24])  # the PNG's IHDR chunk
        h = w * px_h / px_w
        if self.will_page_break(h + (10 if title else 0)):
            self.add_page()
        if title:
            self.h2(title)
        self.image(io.BytesIO(png), x=self.l_margin + (self.epw - w) / 2, w=w)
        self.ln(2)
