"""Draw the book's architecture diagrams as SVG files in book/images/.

Every figure is built here from a few helpers (box, arrow, label), so a diagram is changed by
editing this script and running it, never by editing the SVG. Standard library only.

    python scripts/diagrams.py            # (re)write book/images/*.svg
    python scripts/diagrams.py --check    # exit 1, writing nothing, if a file is out of date

The helpers also record where every piece of text, box and line went, and
`Figure.problems()` lists text that overlaps other text, straddles a box edge, is crossed by a
line or leaves the canvas; tests/test_diagrams.py requires that list to be empty.
"""

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html import escape
from itertools import pairwise
from pathlib import Path

from gpt2_core.evaluate import window_plan   # the diagram draws chapter 9's own plan

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "book" / "images"

FONT = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"
SIZE = 13            # default font size, px
SCRIPT_SIZE = 12     # sub- and superscripts
LEADING = 1.5        # line spacing, in multiples of the font size
INK = "#1a1a1a"
MUTED = "#4a4a4a"
LINE = "#404040"

# Box styles. Fills are light and every style also differs in its border, so the kinds stay
# apart in greyscale. Text in boxes (INK) has a contrast ratio of at least 8:1 on every fill;
# notes (MUTED) sit on white, at 8.9:1.
STYLES: dict[str, dict[str, str]] = {
    "tensor": {"fill": "#ffffff", "stroke": "#4d4d4d", "stroke-width": "1.2", "rx": "3"},
    "layer": {"fill": "#d5e3f1", "stroke": "#1f4e79", "stroke-width": "2", "rx": "7"},
    "norm": {"fill": "#dcefd8", "stroke": "#2d6a2f", "stroke-width": "2", "rx": "7"},
    "op": {"fill": "#fbefd8", "stroke": "#7a5a1e", "stroke-width": "1.2", "rx": "7"},
    "frame": {"fill": "none", "stroke": "#707070", "stroke-width": "1.2", "rx": "10",
              "stroke-dasharray": "5 4"},
    "cached": {"fill": "#d4d4d4", "stroke": "#4d4d4d", "stroke-width": "1.2", "rx": "2"},
    "new": {"fill": "#8fb4dc", "stroke": "#1f4e79", "stroke-width": "2.4", "rx": "2"},
    "empty": {"fill": "#ffffff", "stroke": "#8a8a8a", "stroke-width": "1.2", "rx": "2",
              "stroke-dasharray": "3 3"},
    "blank": {"fill": "#ffffff", "stroke": "#8a8a8a", "stroke-width": "1"},
}

# Advance widths (em) of DejaVu Sans, the widest font in FONT, so that estimated text extents
# are upper bounds in the other fonts too. Characters not listed count as 1 em.
_WIDTH_GROUPS = {
    0.278: "ijl", 0.295: "IJ", 0.318: " ,.·", 0.337: ":;/|\\", 0.352: "f", 0.361: "-",
    0.385: "ᵀ", 0.39: "()[]", 0.392: "t", 0.411: "r", 0.46: '"', 0.5: "_*`", 0.521: "s",
    0.525: "z", 0.531: "?", 0.55: "c", 0.557: "L", 0.575: "F", 0.579: "k", 0.592: "vxy",
    0.603: "P", 0.611: "TY", 0.612: "o", 0.613: "a", 0.615: "e", 0.632: "E",
    0.634: "hnu", 0.635: "bdgpqS", 0.636: "0123456789{}", 0.637: "√", 0.656: "K",
    0.684: "AV", 0.685: "XZ", 0.686: "B", 0.695: "R", 0.698: "C", 0.732: "U", 0.748: "N",
    0.752: "H", 0.77: "D", 0.775: "G", 0.787: "OQ", 0.818: "w", 0.833: "∞",
    0.838: "+<=>×−→≤#~^", 0.863: "M", 0.974: "m", 0.989: "W",
}
WIDTHS = {ch: w for w, chars in _WIDTH_GROUPS.items() for ch in chars}
BOLD = 1.26          # DejaVu Sans Bold is at most 26% wider (I, J)
SLACK = 1.02         # room for kerning and rounding in the renderer
SUB_SHIFT, SUP_SHIFT = 4, -5


def _num(v: float) -> str:
    """A coordinate as short, deterministic text."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def segments(text: str) -> Iterator[tuple[str, str]]:
    """Split label markup into (text, kind) runs: "_{..}" is a subscript, "^{..}" a superscript."""
    pos = 0
    for m in re.finditer(r"([_^])\{([^}]*)\}", text):
        if m.start() > pos:
            yield text[pos:m.start()], ""
        yield m.group(2), m.group(1)
        pos = m.end()
    if pos < len(text):
        yield text[pos:], ""


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Estimated width in px of a label with markup, at font size `size`."""
    total = 0.0
    for run, kind in segments(text):
        run_size = SCRIPT_SIZE if kind else size
        total += sum(WIDTHS.get(ch, 1.0) for ch in run) * run_size
    return total * SLACK * (BOLD if bold else 1.0)


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle: left x, top y, width, height."""

    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def overlaps(self, other: "Rect") -> bool:
        """True if the interiors intersect."""
        return (self.x < other.right and other.x < self.right
                and self.y < other.bottom and other.y < self.bottom)

    def contains(self, other: "Rect") -> bool:
        """True if `other` lies inside this rectangle."""
        return (self.x <= other.x and other.right <= self.right
                and self.y <= other.y and other.bottom <= self.bottom)

    def hit(self, px: float, py: float) -> bool:
        """True if the point lies strictly inside."""
        return self.x < px < self.right and self.y < py < self.bottom


Point = tuple[float, float]


class Figure:
    """An SVG drawing that remembers where its text, boxes and lines are."""

    def __init__(self, name: str, width: int, height: int, title: str, desc: str):
        self.name, self.width, self.height = name, width, height
        self.title, self.desc = title, desc
        self.back: list[str] = []       # drawn first: lines and arrows
        self.front: list[str] = []      # drawn over them: boxes and text
        self.texts: list[tuple[str, Rect]] = []
        self.solids: list[Rect] = []    # boxes that lines must not cross
        self.frames: list[Rect] = []    # dashed groups: lines may cross them, text may not
        self.paths: list[list[Point]] = []

    def label(self, x: float, y: float, text: str, *, size: int = SIZE, anchor: str = "middle",
              bold: bool = False, italic: bool = False, colour: str = INK) -> Rect:
        """One line of text whose vertical centre is `y`; `anchor` is where `x` is."""
        width = text_width(text, size, bold)
        left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
        baseline = y + 0.36 * size
        kinds = {kind for _, kind in segments(text)}
        top = baseline - max(0.76 * size, 0.76 * SCRIPT_SIZE - SUP_SHIFT if "^" in kinds else 0)
        bottom = baseline + max(0.24 * size, 0.24 * SCRIPT_SIZE + SUB_SHIFT if "_" in kinds else 0)
        rect = Rect(left, top, width, bottom - top)
        self.texts.append((text, rect))
        attrs = f'x="{_num(x)}" y="{_num(baseline)}"'
        if anchor != "start":
            attrs += f' text-anchor="{anchor}"'
        if size != SIZE:
            attrs += f' font-size="{size}"'
        if bold:
            attrs += ' font-weight="bold"'
        if italic:
            attrs += ' font-style="italic"'
        if colour != INK:
            attrs += f' fill="{colour}"'
        body, shift = "", 0
        for run, kind in segments(text):
            want = {"": 0, "_": SUB_SHIFT, "^": SUP_SHIFT}[kind]
            run_attrs = f' dy="{want - shift}"' if want != shift else ""
            if kind:
                run_attrs += f' font-size="{SCRIPT_SIZE}"'
            body += f"<tspan{run_attrs}>{escape(run)}</tspan>" if run_attrs else escape(run)
            shift = want
        self.front.append(f"<text {attrs}>{body}</text>")
        return rect

    def lines(self, x: float, y: float, texts: list[str], *, size: int = SIZE,
              anchor: str = "middle", **style) -> None:
        """Several lines of text centred as a block on `y`."""
        for i, t in enumerate(texts):
            self.label(x, y + (i - (len(texts) - 1) / 2) * size * LEADING, t, size=size,
                       anchor=anchor, **style)

    def _draw_rect(self, r: Rect, style: str) -> None:
        attrs = "".join(f' {k}="{v}"' for k, v in STYLES[style].items())
        self.front.append(f'<rect x="{_num(r.x)}" y="{_num(r.y)}" width="{_num(r.w)}" '
                          f'height="{_num(r.h)}"{attrs}/>')

    def rect(self, r: Rect, style: str) -> None:
        """Draw a rectangle in one of STYLES and register it for the layout checks."""
        self._draw_rect(r, style)
        (self.frames if style == "frame" else self.solids).append(r)

    def box(self, cx: float, cy: float, w: float, h: float, texts: list[str],
            style: str = "op", *, bold_first: bool = False) -> Rect:
        """A box centred on (cx, cy) with centred lines of text; raise if they do not fit."""
        r = Rect(cx - w / 2, cy - h / 2, w, h)
        self.rect(r, style)
        step = SIZE * LEADING
        for i, t in enumerate(texts):
            bold = bold_first and i == 0
            if text_width(t, SIZE, bold) > w - 12 or len(texts) * step > h:
                raise ValueError(f"{self.name}: {t!r} does not fit in a {w} x {h} box")
            self.label(cx, cy + (i - (len(texts) - 1) / 2) * step, t, bold=bold)
        return r

    def cell(self, r: Rect, texts: list[str], style: str, *, size: int = SIZE) -> Rect:
        """One cell of a grid of tokens: `r` with centred lines of text at font size `size`;
        a tighter fit than box() allows (3 px each side), raise if the text does not fit."""
        self.rect(r, style)
        step = size * LEADING
        for i, t in enumerate(texts):
            if text_width(t, size) > r.w - 6 or len(texts) * step > r.h + 2:
                raise ValueError(f"{self.name}: {t!r} does not fit in a {r.w} x {r.h} cell")
            self.label(r.cx, r.cy + (i - (len(texts) - 1) / 2) * step, t, size=size)
        return r

    def legend(self, x: float, y: float, items: list[tuple[str, str]]) -> float:
        """Swatches of box styles with their meaning, left to right from x; returns the end."""
        for style, text in items:
            self.rect(Rect(x, y - 8, 22, 16), style)
            x = self.label(x + 30, y, text, anchor="start").right + 28
        return x - 28

    def cards(self, cx: float, cy: float, w: float, h: float, texts: list[str],
              style: str, depth: int = 2) -> Rect:
        """A box with `depth` copies stacked behind it (many of the same); returns the outline."""
        offset = 6
        for k in range(depth, 0, -1):
            self._draw_rect(Rect(cx - w / 2 + k * offset, cy - h / 2 - k * offset, w, h), style)
        outline = Rect(cx - w / 2, cy - h / 2 - depth * offset, w + depth * offset,
                       h + depth * offset)
        self.box(cx, cy, w, h, texts, style, bold_first=True)
        self.solids.append(outline)
        return outline

    def plus(self, cx: float, cy: float, r: float = 11) -> None:
        """A circled plus: an element-wise sum."""
        self.front.append(f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="{_num(r)}" '
                          f'fill="#ffffff" stroke="{LINE}" stroke-width="1.6"/>')
        self.front.append(f'<path d="M{_num(cx - r + 4)},{_num(cy)} H{_num(cx + r - 4)} '
                          f'M{_num(cx)},{_num(cy - r + 4)} V{_num(cy + r - 4)}" '
                          f'stroke="{LINE}" stroke-width="1.6"/>')
        self.solids.append(Rect(cx - r, cy - r, 2 * r, 2 * r))

    def rule(self, x0: float, x1: float, y: float) -> None:
        """A thin horizontal separator; text must keep clear of it like of any line."""
        self.back.append(f'<line x1="{_num(x0)}" y1="{_num(y)}" x2="{_num(x1)}" y2="{_num(y)}" '
                         f'stroke="#b8b8b8" stroke-width="1"/>')
        self.paths.append([(x0, y), (x1, y)])

    def dot(self, x: float, y: float) -> None:
        """A junction where a line splits in two."""
        self.front.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="3.2" fill="{LINE}"/>')

    def arrow(self, *points: Point, head: bool = True, dashed: bool = False,
              strong: bool = False) -> None:
        """A polyline through `points`, with an arrowhead at the last one unless head=False;
        strong=True draws it twice as thick, to pick out one path."""
        d = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
        width = "3" if strong else "1.5"
        attrs = f'points="{d}" fill="none" stroke="{LINE}" stroke-width="{width}"'
        if dashed:
            attrs += ' stroke-dasharray="6 4"'
        if head:
            attrs += f' marker-end="url(#{self.name}-arrow)"'
        self.back.append(f"<polyline {attrs}/>")
        self.paths.append(list(points))

    def down(self, a: Rect, b: Rect, x: float | None = None, note: str | None = None,
             side: str = "right") -> None:
        """A vertical arrow from the bottom of `a` to the top of `b`, with a note beside it."""
        x = a.cx if x is None else x
        self.arrow((x, a.bottom), (x, b.y))
        if note:
            gap = 8 if side == "right" else -8
            self.label(x + gap, (a.bottom + b.y) / 2, note, colour=MUTED,
                       anchor="start" if side == "right" else "end")

    def svg(self) -> str:
        """The finished SVG document."""
        n = self.name
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" role="img" '
                f'aria-labelledby="{n}-title {n}-desc" font-family="{FONT}" '
                f'font-size="{SIZE}" fill="{INK}">')
        marker = (f'<defs><marker id="{n}-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
                  f'markerWidth="8" markerHeight="8" markerUnits="userSpaceOnUse" '
                  f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{LINE}"/></marker></defs>')
        parts = [head, f'<title id="{n}-title">{escape(self.title)}</title>',
                 f'<desc id="{n}-desc">{escape(self.desc)}</desc>', marker,
                 f'<rect width="{self.width}" height="{self.height}" fill="#ffffff"/>',
                 *self.back, *self.front, "</svg>"]
        return "\n".join(parts) + "\n"

    def problems(self) -> list[str]:
        """Layout faults: text that collides with text, boxes or lines, or leaves the canvas."""
        found = []
        canvas = Rect(0, 0, self.width, self.height)
        for i, (text, r) in enumerate(self.texts):
            if not canvas.contains(r):
                found.append(f"{text!r} leaves the canvas")
            for other, q in self.texts[i + 1:]:
                if r.overlaps(q):
                    found.append(f"{text!r} overlaps {other!r}")
            for box in self.solids + self.frames:
                if r.overlaps(box) and not box.contains(r):
                    found.append(f"{text!r} straddles the edge of a box at {box}")
        for path in self.paths:
            for (x0, y0), (x1, y1) in pairwise(path):
                n = max(2, int(max(abs(x1 - x0), abs(y1 - y0))))
                inner = [(x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n) for k in range(n + 1)]
                inner = [p for p in inner if abs(p[0] - x0) + abs(p[1] - y0) > 3
                         and abs(p[0] - x1) + abs(p[1] - y1) > 3]
                for text, r in self.texts:
                    if any(r.hit(*p) for p in inner):
                        found.append(f"a line from {(x0, y0)} crosses {text!r}")
                for box in self.solids:
                    if any(box.hit(*p) for p in inner):
                        found.append(f"a line from {(x0, y0)} crosses the box at {box}")
        return found


def _merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """Chapter 1's merge_pair: each non-overlapping `pair`, left to right, becomes `new`."""
    out, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def bpe_merges() -> Figure:
    """Chapter 1's byte-pair encoding: learned merges applied, in order, to two chunks."""
    # Merges k of train_merges(count_words(verdict), 20) that change ' the' or ' thing': the
    # pair, its count over The Verdict's chunks when it was merged, and its new id 256 + k - 1.
    merges = [(1, (32, 116), 462), (2, (104, 101), 410), (4, (105, 110), 291),
              (9, (256, 257), 191), (19, (259, 103), 130)]
    f = Figure("bpe_merges", 720, 528, "Byte-pair encoding, merge by merge",
               "The chunks ' the' and ' thing' start as their UTF-8 bytes, ids 32 116 104 101 "
               "and 32 116 104 105 110 103. The merges that chapter 1 learns from The "
               "Verdict's chunks are applied in the order they were learned; each was the most "
               "frequent adjacent pair when it was learned. Merge 1 joins space and t into id "
               "256 (462 occurrences), merge 2 h and e into 257 (410), merge 4 i and n into 259 "
               "(291), merge 9 the tokens 256 and 257 into 264, ' the' (191), and merge 19 "
               "259 and g into 274, 'ing' (130). After the 20 merges ' the' is the single token "
               "264 and ' thing' is three tokens, 256 104 274; the other merges match no pair "
               "in these two chunks.")
    text: dict[int, str] = {i: chr(i).replace(" ", "␣") for i in range(32, 127)}
    f.label(20, 22, "Merges learned from The Verdict (section 5), each the most frequent pair "
            "at its step, applied in order", anchor="start", colour=MUTED)
    f.legend(20, 50, [("new", "the token this merge creates"),
                      ("tensor", "a byte or an earlier token")])
    f.label(700, 50, "␣ = space", anchor="end", colour=MUTED)
    unit, height, pitch, top = 40, 40, 56, 128
    words = [(276, " the"), (460, " thing")]
    for left, word in words:
        f.label(left + unit * len(word) / 2, 92, f"chunk “{word.replace(' ', '␣')}”",
                bold=True)
    states = [list(word.encode()) for _, word in words]
    rows = [(["UTF-8 bytes:", "ids 0–255"], None, set())]
    for k, pair, count in merges:
        new = 255 + k
        text[new] = text[pair[0]] + text[pair[1]]
        states = [_merge(ids, pair, new) for ids in states]
        rows.append(([f"merge {k} → id {new}",
                      f"{text[pair[0]]} + {text[pair[1]]}, seen {count} times"], states, {new}))
    states = [list(word.encode()) for _, word in words]
    for r, (label, row_states, fresh) in enumerate(rows):
        cy = top + r * pitch
        f.label(20, cy - 10, label[0], anchor="start", bold=r > 0)
        f.label(20, cy + 10, label[1], anchor="start", colour=MUTED)
        for (left, _), ids in zip(words, row_states or states):
            x = left
            for i in ids:
                w = unit * len(text[i].replace("␣", " "))
                f.cell(Rect(x + 2, cy - height / 2, w - 4, height), [text[i], str(i)],
                       "new" if i in fresh else "tensor")
                x += w
    bottom = top + (len(rows) - 1) * pitch + 48
    f.rule(20, 700, bottom)
    f.lines(360, bottom + 36, ["After all 20 merges, “␣the” is one token (264) and “␣thing” "
                               "three (256, 104, 274).",
                               "Merges 3, 5–8, 10–18 and 20 find no pair in these two chunks."])
    return f


def sliding_windows() -> Figure:
    """Chapter 1's SlidingWindowDataset: windows of T + 1 tokens, targets shifted by one."""
    # The first 13 GPT-2 tokens of The Verdict, as chapter 1 prints them.
    ids = [40, 367, 2885, 1464, 1807, 3619, 402, 271, 10899, 2138, 257, 7026, 15632]
    pieces = ["I", "H", "AD", "always", "thought", "Jack", "G", "is", "burn", "rather", "a",
              "cheap", "genius"]
    T, stride = 8, 4
    f = Figure("sliding_windows", 720, 454, "Sliding windows over a token stream",
               "The first 13 GPT-2 tokens of The Verdict, I HAD always thought Jack Gisburn "
               "rather a cheap genius, with ids 40, 367, 2885 and so on. With context_length "
               "T = 8 and stride 4, window 0 starts at token 0: its inputs are ids[0:8] and its "
               "targets ids[1:9], the same tokens shifted one to the right, so the target at "
               "each position is the token that follows the input there. Window 1 starts 4 "
               "tokens later: inputs ids[4:12], targets ids[5:13]; its first four targets were "
               "already targets in window 0. The 5,145 tokens give (5145 - 8 - 1) // 4 + 1 = "
               "1,285 windows.")
    pitch, left = 50, 20
    col = [left + pitch * (i + 0.5) for i in range(len(ids) + 1)]
    f.label(20, 22, "The Verdict in GPT-2 tokens: SlidingWindowDataset(ids, context_length=8, "
            "stride=4)", anchor="start", colour=MUTED)
    for i, piece in enumerate(pieces):
        f.label(col[i], 54, piece, size=12, colour=MUTED)
    for i, token in enumerate(ids):
        f.cell(Rect(col[i] - pitch / 2 + 2, 70, pitch - 4, 30), [str(token)], "tensor", size=12)
    f.label(col[len(ids)], 85, "…", size=16)
    f.label(20, 116, "the token stream: ids at positions 0–12, their text above (leading spaces "
            "dropped)", anchor="start", colour=MUTED)

    def span(first: int, last: int, y: float) -> None:
        x0, x1 = col[first] - pitch / 2 + 2, col[last] + pitch / 2 - 2
        f.arrow((x0, y + 5), (x0, y), (x1, y), (x1, y + 5), head=False)

    for w, top in ((0, 146), (1, 292)):
        s = w * stride
        f.label(col[s] - pitch / 2 + 2, top, f"window {w}: starts at s = {s}, reads T + 1 = "
                f"{T + 1} tokens", anchor="start", bold=True)
        span(s, s + T, top + 16)
        rows = ((top + 42, s, "inputs", f"x = ids[{s}:{s + T}]", "tensor"),
                (top + 80, s + 1, "targets", f"y = ids[{s + 1}:{s + T + 1}]", "new"))
        for cy, first, name, what, style in rows:
            for i in range(first, first + T):
                f.cell(Rect(col[i] - pitch / 2 + 2, cy - 15, pitch - 4, 30), [str(ids[i])],
                       style, size=12)
            if w == 0:
                f.label(col[first + T] - pitch / 2 + 12, cy, f"{name}: {what}", anchor="start")
            else:
                f.label(col[first] - pitch / 2 - 10, cy, f"{name}: {what}", anchor="end")
    f.arrow((col[0] - pitch / 2 + 2, 264), (col[stride] - pitch / 2 + 2, 264))
    f.label(col[stride] - pitch / 2 + 10, 264, f"stride = {stride}: the next window starts "
            f"{stride} tokens later", anchor="start", colour=MUTED)
    f.rule(20, 700, 412)
    f.label(360, 434, "5,145 tokens: (5145 − 8 − 1) // 4 + 1 = 1,285 windows; "
            "stride 4 < T, so neighbours share targets")
    return f


def strided_windows() -> Figure:
    """Chapter 9's sliding-window evaluation: overlapping windows, only new targets scored."""
    n_targets, T, S = 10, 4, 2
    plan = window_plan(n_targets, T, S)
    f = Figure("strided_windows", 720, 494, "Strided perplexity windows",
               "Eleven tokens, ids[0] to ids[10], give ten targets: target t is ids[t + 1], "
               "predicted at position t. Windows of T = 4 tokens advance by the stride S = 2, "
               "as window_plan(10, context=4, stride=2) = [(0, 4), (2, 2), (4, 2), (6, 2)] "
               "says. The first window reads ids[0:4] and scores all four of its predictions, "
               "targets 0 to 3. Each later window reads T tokens but scores only its last S "
               "predictions, the new ones: ids[2:6] scores targets 4 and 5, ids[4:8] targets 6 "
               "and 7, ids[6:10] targets 8 and 9; its first T - S predictions were scored "
               "already and are only context. Every target is scored exactly once, and after "
               "the first window each with at least T - S = 2 tokens of context. The book uses "
               "T = 64 and strides from 64 down to 4.")
    pitch, left = 44, 212
    col = [left + pitch * (i + 0.5) for i in range(n_targets + 1)]
    f.label(20, 22, f"window_plan({n_targets}, context={T}, stride={S}) = "
            + ", ".join(f"({s}, {n})" for s, n in plan).join("[]")
            + ": (start, new predictions scored)", anchor="start", colour=MUTED)
    f.legend(20, 52, [("new", "prediction scored here"),
                      ("cached", "read as context, its prediction not scored")])

    def cells(cy: float, first: int, texts: list[str], styles: list[str]) -> None:
        for i, (text, style) in enumerate(zip(texts, styles)):
            f.cell(Rect(col[first + i] - pitch / 2 + 2, cy - 15, pitch - 4, 30), [text], style,
                   size=12)

    f.label(20, 100, "tokens: ids[i]", anchor="start", bold=True)
    cells(100, 0, [str(i) for i in range(n_targets + 1)], ["tensor"] * (n_targets + 1))
    for w, (start, new) in enumerate(plan):
        cy = 156 + 56 * w
        f.label(20, cy - 9, f"reads ids[{start}:{start + T}]", anchor="start")
        scored = range(start + T - new, start + T)
        what = (f"scores targets {scored[0]}–{scored[-1]}" if new > S
                else f"scores targets {scored[0]}, {scored[-1]}")
        f.label(20, cy + 10, what, anchor="start", colour=MUTED)
        cells(cy, start, [str(i) for i in range(start, start + T)],
              ["new" if i in scored else "cached" for i in range(start, start + T)])
        if w:
            x0, x1 = col[start - S] - pitch / 2 + 2, col[start] - pitch / 2 + 2
            f.arrow((x0, cy - 25), (x1, cy - 25))
        if w == 1:
            f.label(x1 + 8, cy - 25, f"stride S = {S}", anchor="start", colour=MUTED, size=12)
    last = 156 + 56 * len(plan)
    f.label(20, last - 5, "targets t", anchor="start", bold=True)
    f.label(20, last + 14, "= ids[t + 1], each once", anchor="start", colour=MUTED)
    cells(last + 4, 0, [str(t) for t in range(n_targets)], ["tensor"] * n_targets)
    f.rule(20, 700, last + 42)
    f.lines(360, last + 80, ["The book: T = block_size = 64 and strides 64, 32, …, 2 on the "
                             "validation text.",
                             "Stride 32 gives 2.2399 bits/char, fixed windows (stride 64) "
                             "2.2551, at twice the forward passes."])
    return f


def classify_last_token() -> Figure:
    """Chapter 6's classifier: a right-padded batch, read at each row's last real token."""
    # The two messages of chapter 6's demo in its 1,024-token BPE (leading spaces dropped).
    rows = [["F", "ree", "␣", "ent", "ry", "!", "T", "x", "t", "W", "IN", "to", "␣", "8", "0",
             "0", "8", "6"],
            ["o", "k", "see", "you", "l", "at", "er"]]
    T, pad = max(len(r) for r in rows), 1023
    lengths = [len(r) for r in rows]
    f = Figure("classify_last_token", 720, 470, "Reading the class at the last real token",
               "Chapter 6's demo batch: Free entry! Txt WIN to 80086 is 18 tokens long and ok "
               "see you later 7, so pad_batch right-pads the second row with <|endoftext|>, id "
               "1023, to T = 18, and returns lengths 18 and 7. The GPT, whose lm_head is "
               "replaced by a Linear(n_embd, 2), gives two logits at every position, a tensor "
               "of shape (2, 18, 2). The classifier reads each row at its last real token, "
               "position lengths - 1: position 17 in row 0 and position 6 in row 1, not row "
               "1's last position, which is padding. The two rows of class logits, shape "
               "(2, 2), give ham or spam. With causal attention position 6 sees tokens 0 to 6 "
               "only, so the padding after it changes nothing.")
    pitch, left = 33, 86
    col = [left + pitch * (t + 0.5) for t in range(T)]
    f.label(20, 22, "pad_batch([“Free entry! Txt WIN to 80086”, “ok see you later”], "
            f"pad_id={pad}): lengths {lengths}", anchor="start", colour=MUTED)
    f.legend(20, 50, [("new", "read: the last real token"),
                      ("cached", f"padding, <|endoftext|> = {pad}"),
                      ("empty", "computed, never read")])
    f.label(20, 80, "position", anchor="start", colour=MUTED, size=12)
    for t in range(T):
        f.label(col[t], 80, str(t), colour=MUTED, size=12)

    def cell(t: int, cy: float, texts: list[str], style: str) -> Rect:
        return f.cell(Rect(col[t] - pitch / 2 + 2, cy - 14, pitch - 4, 28), texts, style, size=12)

    ids_y = [106, 140]
    for r, (pieces, cy) in enumerate(zip(rows, ids_y)):
        f.label(20, cy, f"row {r}", anchor="start", bold=True)
        for t in range(T):
            cell(t, cy, [pieces[t]] if t < len(pieces) else [], "tensor" if t < len(pieces)
                 else "cached")
    gpt = f.box(left + pitch * T / 2, 206, 420, 40,
                ["gpt(idx): causal blocks, then lm_head = Linear(n_embd, 2)"], "layer")
    f.arrow((gpt.cx, ids_y[1] + 14), (gpt.cx, gpt.y))
    f.label(gpt.cx + 8, (ids_y[1] + 14 + gpt.y) / 2, "idx: (2, 18)", anchor="start",
            colour=MUTED)
    z_y = [278, 312]
    f.arrow((gpt.cx, gpt.bottom), (gpt.cx, z_y[0] - 14))
    f.label(gpt.cx + 8, (gpt.bottom + z_y[0] - 14) / 2, "logits at every position: "
            "(2, 18, 2)", anchor="start", colour=MUTED)
    for r, cy in enumerate(z_y):
        f.label(20, cy, f"row {r}", anchor="start", bold=True)
        for t in range(T):
            last = t == lengths[r] - 1
            cell(t, cy, ["z"] if t < lengths[r] else [],
                 "new" if last else "tensor" if t < lengths[r] else "empty")
    out = f.box(390, 394, 390, 48, ["class logits (2, 2): logits[arange(B), lengths − 1]",
                                    "argmax: ham or spam"], "op")
    f.arrow((col[lengths[1] - 1], z_y[1] + 14), (col[lengths[1] - 1], out.y))
    f.label(col[lengths[1] - 1] - 8, 350, f"row 1: position {lengths[1] - 1}", anchor="end",
            colour=MUTED)
    rail = left + pitch * T + 10
    f.arrow((col[T - 1] + pitch / 2 - 2, z_y[0]), (rail, z_y[0]), (rail, out.cy),
            (out.right, out.cy))
    f.label(rail - 8, 350, f"row 0: position {lengths[0] - 1}", anchor="end", colour=MUTED)
    f.label(360, 446, "Row 1's last position holds padding; causal attention keeps the "
            "padding out of positions 0–6.", colour=MUTED)
    return f


def instruction_masking() -> Figure:
    """Chapter 7's collate: inputs, shifted targets, the prompt and the padding set to -100."""
    n_prompt, n_response, T = 84, 21, 107
    eot = n_prompt + n_response            # the example's <|endoftext|> is ids[105]
    # Columns: positions t of chapter 7's example ("Name a mammal that lays eggs."), its pieces
    # in the 1,024-token BPE (leading spaces dropped, ↵ = newline); None is a gap.
    pieces = {0: "B", 1: "el", 2: "ow", 82: ":", 83: "↵", 84: "A", 85: "m", 86: "am",
              103: "us", 104: ".", 105: "eot"}
    cols = [0, 1, None, 82, 83, 84, 85, None, 103, 104, 105, 106]
    f = Figure("instruction_masking", 720, 460, "Masking the prompt with -100",
               "Chapter 7's first test example, Name a mammal that lays eggs. with the "
               "response A mammal that lays eggs is the platypus., is a prompt of 84 tokens "
               "(ids 0 to 83: the header, ### Instruction:, the instruction and ### "
               "Response:), a response of 21 tokens (ids 84 to 104) and <|endoftext|> (id "
               "105), in a batch padded to 107 positions. The input at position t is ids[t]; "
               "positions 105 and 106 are padding. The target at t is ids[t + 1], so position "
               "83, whose input is the prompt's last token, has the response's first token A "
               "as its target, and position 104 has <|endoftext|>. Without masking every "
               "target up to 104 counts and the padding targets are -100. With "
               "mask_prompt=True the first n_prompt - 1 = 83 targets, positions 0 to 82, "
               "become -100 as well, so the loss counts only the response and its "
               "<|endoftext|>.")
    pitch, left = 48, 126
    x = {c: left + pitch * (i + 0.5) for i, c in enumerate(cols) if c is not None}
    gaps = [left + pitch * (i + 0.5) for i, c in enumerate(cols) if c is None]
    f.label(20, 22, "collate(batch, pad_id=eot, mask_prompt=…): one row; eot = <|endoftext|>, "
            "↵ = newline", anchor="start", colour=MUTED)
    f.legend(20, 50, [("new", "target in the loss"), ("cached", "padding input"),
                      ("empty", "−100: ignored by the loss")])

    def bracket(first: int, last: int, y: float, text: str) -> None:
        x0, x1 = x[first] - pitch / 2 + 2, x[last] + pitch / 2 - 2
        f.arrow((x0, y + 5), (x0, y), (x1, y), (x1, y + 5), head=False)
        f.label((x0 + x1) / 2, y - 12, text)

    f.label(20, 80, "prompt = the header, “### Instruction:”, the instruction, "
            "“### Response:”, with their newlines", anchor="start", colour=MUTED)
    bracket(0, n_prompt - 1, 122, f"prompt: ids 0–{n_prompt - 1}")
    bracket(n_prompt, eot - 1, 122, f"response: {n_response} tokens")
    bracket(eot, T - 1, 122, "padding")
    f.label(20, 144, "position t", anchor="start", colour=MUTED, size=12)
    for t, cx in x.items():
        f.label(cx, 144, str(t), colour=MUTED, size=12)

    def row(cy: float, name: str, note: str, content: dict[int, tuple[str, str]]) -> None:
        f.label(20, cy - 9, name, anchor="start", bold=True)
        f.label(20, cy + 10, note, anchor="start", colour=MUTED, size=12)
        for t, cx in x.items():
            text, style = content[t]
            f.cell(Rect(cx - pitch / 2 + 2, cy - 15, pitch - 4, 30), [text], style, size=12)
        for gx in gaps:
            f.label(gx, cy, "…", size=16)

    def target(t: int, masked: bool) -> tuple[str, str]:
        if t >= eot or (masked and t < n_prompt - 1):
            return "−100", "empty"
        return pieces.get(t + 1, "eot"), "new"

    row(180, "inputs x", "x_{t} = ids[t]",
        {t: ("eot", "cached") if t >= eot else (pieces[t], "tensor") for t in x})
    row(234, "targets y", "y_{t} = ids[t + 1]", {t: target(t, False) for t in x})
    row(306, "targets y", "prompt masked", {t: target(t, True) for t in x})
    f.label(20, 270, "With mask_prompt=True the first n_prompt − 1 = 83 targets, the prompt's, "
            "become −100 too:", anchor="start", colour=MUTED)
    first = x[n_prompt - 1]
    f.arrow((first, 342), (first, 321))
    f.lines(first, 366, [f"t = {n_prompt - 1}: the last prompt input", "predicts the first "
                                                                          "response token"],
            colour=MUTED, size=12)
    f.arrow((x[eot - 1], 342), (x[eot - 1], 321))
    f.lines(x[eot - 1] - 30, 366, ["the first eot is a target:", "it teaches the model to stop"],
            colour=MUTED, size=12)
    f.rule(20, 700, 400)
    f.lines(360, 430, ["The loss averages −log p over the blue targets only: with the prompt "
                       "masked,",
                       f"the {n_response} response tokens and the first eot; padding is −100 "
                       "either way."])
    return f


def beam_search() -> Figure:
    """Chapter 5's beam search on the book's model: the best 2K candidates of each step."""
    K = 3
    # Chapter 5's beam_search with num_beams=3 on the book's model from "JULIET:\nO", stop
    # token newline: each step's 2K best candidates, best first, as (token, summed log p, the
    # running beam it extends, its fate).
    steps = [[(",", -0.96, 0, "kept"), ("ur", -2.46, 0, "kept"), ("n", -2.82, 0, "kept"),
              (" God", -4.10, 0, "pruned"), (" my", -4.27, 0, "pruned"),
              (" Cl", -4.36, 0, "pruned")],
             [(" my", -3.69, 0, "kept"), (" I", -4.23, 0, "kept"), ("e", -4.37, 2, "kept"),
              (" and", -4.52, 0, "pruned"), (" good", -4.67, 0, "pruned"),
              (" for", -4.75, 0, "pruned")],
             [(" lord", -4.88, 0, "kept"), (" of", -6.54, 2, "kept"), (" am", -6.65, 1, "kept"),
              (" will", -6.66, 1, "pruned"), (" good", -6.71, 0, "pruned"),
              (",", -6.72, 2, "pruned")],
             [(",", -5.31, 0, "kept"), ("!", -7.48, 0, "kept"), (".", -7.59, 0, "kept"),
              (";", -7.64, 0, "pruned"), ("?", -7.91, 0, "pruned"), (" the", -8.99, 1, "pruned")],
             [("\n", -7.89, 2, "finished"), (" and", -7.97, 0, "kept"), (" I", -8.27, 0, "kept"),
              (" my", -8.27, 0, "kept"), ("\n", -8.74, 1, "pruned"),
              ("\n", -8.97, 0, "pruned")]]
    f = Figure("beam_search", 720, 470, "The beam-search tree",
               "Beam search with num_beams = 3 on the book's model from the prompt JULIET:, "
               "newline, O, with the newline as stop token. Each of five steps ranks every "
               "one-token extension of the running beams by its summed log-probability and "
               "shows the best six. Step 1 keeps ',' (-0.96), 'ur' (-2.46) and 'n' (-2.82). "
               "Step 2 keeps ' my' (-3.69) and ' I' (-4.23) after the comma and 'e' (-4.37) "
               "after 'n'; the beam 'ur' has no candidate left and is dropped. Step 3 keeps ' "
               "lord' (-4.88), ' of' (-6.54) and ' am' (-6.65). Step 4 keeps three extensions "
               "of ', my lord': ',' (-5.31), '!' (-7.48) and '.' (-7.59), so the other two "
               "beams end. At step 5 the newline after ', my lord.' is among the three best: "
               "the hypothesis O, my lord. is finished with log-probability -7.89, the best "
               "answer chapter 5 prints for length_penalty 0; ' and', ' I' and ' my' after ', my lord,' keep "
               "running, while two more newlines rank fifth and sixth and are dropped.")
    show = {" ": "␣", "\n": "↵"}

    def piece(token: str) -> str:
        return "".join(show.get(ch, ch) for ch in token)

    f.label(20, 22, f"num_beams = {K}, prompt “JULIET:↵O”, stop token ↵; at each step the "
            f"{2 * K} best extensions by Σ log p", anchor="start", colour=MUTED)
    f.legend(20, 50, [("new", f"kept: the {K} best running beams"),
                      ("norm", f"finished: ends in ↵, in the best {K}"), ("empty", "dropped")])
    w, h, gap, pitch, top = 80, 40, 40, 48, 120
    root = f.cell(Rect(20, top + pitch * 2.5 - h / 2, w, h), ["prompt", "JULIET:↵O"], "tensor")
    # Each step's candidates as (row, the row of its parent one step back); the path of the
    # finished hypothesis is traced back from its node and drawn thick.
    rows = []
    for s, candidates in enumerate(steps):
        kept = [r for r, c in enumerate(steps[s - 1]) if c[3] == "kept"] if s else [None]
        rows.append([kept[c[2]] for c in candidates])
    path = set()
    for s in range(len(steps) - 1, -1, -1):
        done = [r for r, c in enumerate(steps[s]) if c[3] == "finished"]
        if done:
            row = done[0]
            for back in range(s, -1, -1):
                path.add((back, row))
                row = rows[back][row]
            break
    styles = {"kept": "new", "finished": "norm", "pruned": "empty"}
    previous: list[Rect | None] = [root]
    for s, candidates in enumerate(steps):
        x = root.right + gap + s * (w + gap)
        f.label(x + w / 2, 88, f"step {s + 1}", bold=True)
        nodes = []
        for r, (token, score, beam, fate) in enumerate(candidates):
            cy = top + r * pitch
            node = f.cell(Rect(x, cy - h / 2, w, h),
                          [piece(token), f"{score:.2f}".replace("-", "−")], styles[fate])
            parent = previous[rows[s][r]] if s else root
            bus = parent.right + (gap / 2 if s == 0 else 10 + 10 * beam)
            f.arrow((parent.right, parent.cy), (bus, parent.cy), (bus, cy), (node.x, cy),
                    head=False, strong=(s, r) in path)
            nodes.append(node)
        previous = nodes
    f.rule(20, 700, 408)
    f.lines(360, 438, ["Finished (thick path): “O, my lord.↵”, Σ log p = −7.89, "
                       "chapter 5's best answer for length_penalty 0.",
                       "The beam “Our” (ur) gets no place at step 2; at step 4 all three beams "
                       "extend “, my lord”."])
    return f


def attention_qkv() -> Figure:
    """One causal self-attention head, from x to its output z."""
    f = Figure("attention_qkv", 720, 600, "One causal self-attention head",
               "x of shape (B, T, C) is projected by W_q, W_k and W_v into Q, K and V, each "
               "(B, T, d_k). The scores Q K^T / sqrt(d_k) form a (B, T, T) tensor; the causal "
               "mask sets every score of a key after the query to minus infinity; a softmax over "
               "the keys turns each row into weights that sum to one; the weights times V give "
               "the output z of shape (B, T, d_k).")
    qx, kx, vx = 170, 350, 570
    x = f.box(kx, 36, 170, 36, ["x: (B, T, C)"], "tensor")
    f.arrow((kx, x.bottom), (kx, 76), head=False)
    f.arrow((qx, 76), (vx, 76), head=False)
    f.dot(kx, 76)
    proj = {}
    for cx, name, sub in ((qx, "query", "q"), (kx, "key", "k"), (vx, "value", "v")):
        proj[sub] = f.box(cx, 118, 150, 44, [f"{name}: W_{{{sub}}}", "Linear(C, d_{k})"],
                          "layer")
        f.arrow((cx, 76), (cx, proj[sub].y))
    scores = f.box(260, 222, 220, 44, ["scores = Q K^{T} / √d_{k}"])
    f.down(proj["q"], scores, note="Q: (B, T, d_{k})", side="left")
    f.down(proj["k"], scores, note="K: (B, T, d_{k})")
    mask = f.box(260, 306, 220, 44, ["causal mask: −∞ where j > i"])
    f.down(scores, mask, note="(B, T, T)")
    softmax = f.box(260, 390, 220, 44, ["softmax over the keys j"])
    f.down(mask, softmax, note="(B, T, T)")
    mix = f.box(260, 474, 220, 44, ["weights @ V"])
    f.down(softmax, mix, note="weights: (B, T, T)")
    f.label(252, 432, "dropout here in training", italic=True, colour=MUTED, anchor="end", size=12)
    f.arrow((vx, proj["v"].bottom), (vx, 474), (mix.right, 474))
    f.label(vx + 8, 300, "V: (B, T, d_{k})", colour=MUTED, anchor="start")
    z = f.box(260, 554, 170, 36, ["z: (B, T, d_{k})"], "tensor")
    f.down(mix, z)
    f.lines(700, z.cy, ["C = n_embd", "d_{k} = head size"], size=12, colour=MUTED, anchor="end")
    # The mask as a picture: row i = query, column j = key; shaded cells may be attended to.
    n, cell, left, top = 5, 12, 58, 276
    for i in range(n):
        for j in range(n):
            f.rect(Rect(left + j * cell, top + i * cell, cell, cell),
                   "cached" if j <= i else "blank")
    f.label(left + n * cell / 2, top - 13, "mask (T × T)", size=12, colour=MUTED)
    f.label(left + n * cell / 2, top + n * cell + 13, "shaded: j ≤ i", size=12, colour=MUTED)
    return f


def multi_head() -> Figure:
    """Multi-head attention: one fused projection, heads as a batch dimension, concatenation."""
    f = Figure("multi_head", 720, 640, "Multi-head causal self-attention",
               "c_attn, a Linear(C, 3C), maps x of shape (B, T, C) to (B, T, 3C), which is split "
               "into q, k and v of shape (B, T, C) each. Each is cut into n_head slices of "
               "head_dim = C / n_head columns and reshaped to (B, n_head, T, head_dim), so "
               "slice r of q, k and v goes to head r. All heads run causal attention in "
               "parallel; their outputs are put back side by side into (B, T, C) and c_proj, a "
               "Linear(C, C), mixes them.")
    left, slot, n = 280, 90, 4
    centre = left + slot * n / 2
    cols = [left + slot * (r + 0.5) for r in range(n)]
    heads = ["1", "2", "…", "h"]
    x = f.box(centre, 36, 170, 36, ["x: (B, T, C)"], "tensor")
    c_attn = f.box(centre, 108, 220, 40, ["c_attn: Linear(C, 3C)"], "layer")
    f.down(x, c_attn)
    bus, rows = left - 26, {"q": 190, "k": 232, "v": 274}
    f.arrow((centre, c_attn.bottom), (centre, 152), (bus, 152), (bus, rows["v"]), head=False)
    f.label(centre + 8, 140, "(B, T, 3C)", colour=MUTED, anchor="start")
    f.lines(bus - 10, rows["k"], ["split into", "q, k, v"], colour=MUTED, anchor="end")
    for name, y in rows.items():
        f.arrow((bus, y), (left, y))
        for r, col in enumerate(cols):
            text = "…" if heads[r] == "…" else f"{name}_{{{heads[r]}}}"
            f.box(col, y, slot, 30, [text], "tensor")
        f.label(left + slot * n + 8, y, "(B, T, C)", colour=MUTED, anchor="start")
    f.dot(bus, rows["k"])
    f.dot(bus, rows["q"])
    f.lines(20, 336, ["view + transpose(1, 2):", "(B, n_head, T, head_dim)"], colour=MUTED,
            anchor="start")
    f.lines(20, 400, ["every head at once:", "softmax(q k^{T} / √head_dim + M) v"],
            colour=MUTED, anchor="start")
    outs = []
    for r, col in enumerate(cols):
        if heads[r] == "…":
            f.label(col, 372, "…", size=16)
            continue
        head = f.box(col, 372, slot - 14, 44, [f"head {heads[r]}"], "op")
        f.arrow((col, rows["v"] + 15), (col, head.y))
        f.label(col + 7, (rows["v"] + 15 + head.y) / 2,
                f"q_{{{heads[r]}}}, k_{{{heads[r]}}}, v_{{{heads[r]}}}", colour=MUTED,
                anchor="start")
        outs.append((col, head))
    concat_y = 472
    for r, col in enumerate(cols):
        text = "…" if heads[r] == "…" else f"y_{{{heads[r]}}}"
        f.box(col, concat_y, slot, 30, [text], "tensor")
    for col, head in outs:
        f.arrow((col, head.bottom), (col, concat_y - 15))
    f.label(left + slot * n + 8, concat_y, "(B, T, C)", colour=MUTED, anchor="start")
    f.lines(left - 12, concat_y, ["transpose(1, 2).view(B, T, C):", "heads side by side"],
            colour=MUTED, anchor="end")
    c_proj = f.box(centre, 544, 220, 40, ["c_proj: Linear(C, C)"], "layer")
    f.arrow((centre, concat_y + 15), (centre, c_proj.y))
    y = f.box(centre, 612, 170, 36, ["output: (B, T, C)"], "tensor")
    f.down(c_proj, y)
    f.lines(20, y.cy, ["C = n_embd, h = n_head", "head_dim = C / n_head"], size=12,
            colour=MUTED, anchor="start")
    return f


def prenorm_block() -> Figure:
    """GPT-2's pre-norm transformer block with its two residual connections."""
    f = Figure("prenorm_block", 720, 696, "The pre-norm transformer block",
               "The residual stream x of shape (B, T, C) runs straight down the left. A first "
               "branch normalises it with ln_1, applies causal multi-head attention, and is "
               "added back: x + attn(ln_1(x)). A second branch normalises the result with ln_2 "
               "and applies the MLP: c_fc widens each position to 4 n_embd, GELU, and c_proj "
               "narrows it back to n_embd; it is added too: x + mlp(ln_2(x)). The output has "
               "the input's shape, (B, T, C).")
    sx, bx = 190, 460
    x = f.box(sx, 36, 170, 36, ["x: (B, T, C)"], "tensor")
    add1, add2 = (sx, 270), (sx, 606)
    ln_1 = f.box(bx, 128, 220, 40, ["ln_1: LayerNorm(C)"], "norm")
    attn = f.box(bx, 204, 260, 52, ["attn: CausalSelfAttention", "n_head heads, c_attn … c_proj"],
                 "layer")
    f.arrow((sx, x.bottom), (sx, add1[1] - 11))
    f.dot(sx, 90)
    f.arrow((sx, 90), (bx, 90), (bx, ln_1.y))
    f.down(ln_1, attn)
    f.arrow((bx, attn.bottom), (bx, add1[1]), (sx + 11, add1[1]))
    f.plus(*add1)
    f.lines(sx - 12, 180, ["residual:", "x unchanged"], colour=MUTED, anchor="end")
    f.label(sx - 18, add1[1], "x + attn(ln_1(x))", anchor="end", colour=MUTED)
    ln_2 = f.box(bx, 346, 220, 40, ["ln_2: LayerNorm(C)"], "norm")
    frame = Rect(bx - 150, 376, 300, 200)
    f.rect(frame, "frame")
    f.label(frame.x + 10, frame.y + 14, "mlp", anchor="start", bold=True)
    f.label(frame.right - 10, frame.y + 14, "hidden width 4C", anchor="end", colour=MUTED,
            size=12)
    c_fc = f.box(bx, 424, 220, 36, ["c_fc: Linear(C, 4C)"], "layer")
    gelu = f.box(bx, 490, 220, 32, ["GELU (tanh)"], "op")
    c_proj = f.box(bx, 554, 220, 36, ["c_proj: Linear(4C, C)"], "layer")
    f.arrow((sx, add1[1] + 11), (sx, add2[1] - 11))
    f.dot(sx, 308)
    f.arrow((sx, 308), (bx, 308), (bx, ln_2.y))
    f.down(ln_2, c_fc)
    f.down(c_fc, gelu, note="(B, T, 4C)")
    f.down(gelu, c_proj, note="(B, T, 4C)")
    f.arrow((bx, c_proj.bottom), (bx, add2[1]), (sx + 11, add2[1]))
    f.plus(*add2)
    f.lines(sx - 12, 456, ["residual:", "x unchanged"], colour=MUTED, anchor="end")
    f.label(sx - 18, add2[1], "x + mlp(ln_2(x))", anchor="end", colour=MUTED)
    out = f.box(sx, 666, 170, 36, ["output: (B, T, C)"], "tensor")
    f.arrow((sx, add2[1] + 11), (sx, out.y))
    f.label(700, out.cy, "C = n_embd", size=12, colour=MUTED, anchor="end")
    return f


def gpt2_model() -> Figure:
    """The whole GPT-2: embeddings, n_layer blocks, ln_f and the tied LM head."""
    f = Figure("gpt2_model", 720, 650, "The GPT-2 model",
               "Token ids idx of shape (B, T) are looked up in the token embedding wte, and "
               "the positions 0 to T - 1 in the position embedding wpe; the two (B, T, C) and "
               "(1, T, C) tensors are added and passed through dropout. n_layer pre-norm "
               "blocks follow, each keeping the shape (B, T, C), then the final LayerNorm ln_f. "
               "The LM head, a Linear(C, vocab_size) without bias whose weight is the same "
               "tensor as wte (shown as a dashed link), gives logits of shape "
               "(B, T, vocab_size).")
    cx, tx, px = 360, 220, 500
    idx = f.box(tx, 36, 200, 36, ["idx: token ids (B, T)"], "tensor")
    pos = f.box(px, 36, 220, 36, ["position_ids: 0, 1, …, T − 1"], "tensor")
    wte = f.box(tx, 118, 200, 48, ["wte: Embedding(V, C)", "token embedding"], "layer")
    wpe = f.box(px, 118, 220, 48, ["wpe: Embedding(block_size, C)", "position embedding"],
                "layer")
    f.down(idx, wte)
    f.down(pos, wpe)
    add = (cx, 198)
    f.arrow((tx, wte.bottom), (tx, add[1]), (cx - 11, add[1]))
    f.arrow((px, wpe.bottom), (px, add[1]), (cx + 11, add[1]))
    f.label(tx - 8, 172, "(B, T, C)", colour=MUTED, anchor="end")
    f.label(px + 8, 172, "(1, T, C)", colour=MUTED, anchor="start")
    f.plus(*add)
    drop = f.box(cx, 266, 220, 36, ["drop: Dropout(dropout)"], "op")
    f.arrow((cx, add[1] + 11), (cx, drop.y))
    f.label(cx + 8, 229, "(B, T, C)", colour=MUTED, anchor="start")
    blocks = f.cards(cx, 352, 260, 52, ["n_layer × Block", "h[0], h[1], …, h[n_layer − 1]"],
                     "layer")
    f.down(drop, blocks, x=cx, note="(B, T, C)")
    ln_f = f.box(cx, 440, 220, 36, ["ln_f: LayerNorm(C)"], "norm")
    f.down(blocks, ln_f, x=cx, note="(B, T, C)")
    head = f.box(cx, 524, 280, 40, ["lm_head: Linear(C, V, bias=False)"], "layer")
    f.down(ln_f, head, note="(B, T, C)")
    logits = f.box(cx, 612, 240, 36, ["logits: (B, T, vocab_size)"], "tensor")
    f.down(head, logits)
    f.lines(700, 612, ["C = n_embd", "V = vocab_size"], size=12, colour=MUTED, anchor="end")
    rail = 48
    f.arrow((wte.x, wte.cy), (rail, wte.cy), (rail, head.cy), (head.x, head.cy), head=False,
            dashed=True)
    f.lines(rail + 10, 352, ["weight tying:", "lm_head.weight", "is wte.weight,", "one tensor"],
            colour=MUTED, anchor="start")
    return f


def training_loop() -> Figure:
    """One optimiser step of chapter 4's train(), repeated until max_steps."""
    f = Figure("training_loop", 720, 616, "The training loop",
               "Each optimiser step sets the learning rate from the warmup and cosine schedule "
               "and draws the batch's start offsets from the step number. For each of "
               "grad_accum_steps micro-batches it gets inputs and next-token targets, runs the "
               "model, computes the cross-entropy loss and calls backward on the loss divided "
               "by grad_accum_steps, so the gradients add up. Then it clips the global "
               "gradient norm, takes an AdamW step, zeroes the gradients and increments step. "
               "Every eval_interval steps and at the last step it estimates the validation "
               "loss, and every checkpoint_interval steps and at the end it saves a "
               "checkpoint; then the next step begins, while step is below max_steps.")
    lx, rx, top = 195, 550, 60
    f.label(lx, 20, "start: step = 0, or the step of a resumed checkpoint", colour=MUTED)
    lr = f.box(lx, top + 24, 270, 48, ["lr = lr_at(step, cfg)", "linear warmup, then cosine decay"])
    f.arrow((lx, 32), (lx, lr.y))
    starts = f.box(lx, top + 96, 270, 48, ["starts = batch_starts(step, …)",
                                            "the batch is a function of the step"])
    f.down(lr, starts)
    frame = Rect(28, top + 146, 318, 356)
    f.rect(frame, "frame")
    f.label(frame.cx, frame.bottom - 18, "for each of grad_accum_steps micro-batches",
            italic=True)
    batch = f.box(lx, top + 206, 270, 48, ["x, y = get_batch(train_tokens, …)",
                                           "inputs, next-token targets: (B, T)"], "tensor")
    f.down(starts, batch)
    forward = f.box(lx, top + 290, 270, 40, ["logits = model(x)"], "layer")
    f.down(batch, forward)
    loss = f.box(lx, top + 362, 270, 40, ["loss = F.cross_entropy(logits, y)"])
    f.down(forward, loss, note="(B, T, V)")
    backward = f.box(lx, top + 436, 270, 48, ["(loss / grad_accum_steps).backward()",
                                              "gradients add up in .grad"])
    f.down(loss, backward)
    f.arrow((backward.x, backward.cy), (42, backward.cy), (42, batch.cy), (batch.x, batch.cy))
    clip = f.box(rx, top + 24, 310, 48, ["clip_grad_norm_(parameters, grad_clip)",
                                         "global gradient norm ≤ grad_clip"])
    f.arrow((backward.right, backward.cy), (366, backward.cy), (366, clip.cy), (clip.x, clip.cy))
    step = f.box(rx, top + 96, 310, 48, ["optimizer.step()", "AdamW, at learning rate lr"])
    f.down(clip, step)
    zero = f.box(rx, top + 164, 310, 40, ["optimizer.zero_grad(set_to_none=True)"])
    f.down(step, zero)
    count = f.box(rx, top + 226, 310, 36, ["step += 1"], "tensor")
    f.down(zero, count)
    val = f.box(rx, top + 308, 310, 64, ["every eval_interval steps", "and at max_steps:",
                                         "val_loss = evaluate_loss(model, val, …)"])
    f.down(count, val)
    save = f.box(rx, top + 394, 310, 64, ["every checkpoint_interval steps", "and at the end:",
                                          "save_checkpoint(out_dir, model, …)"])
    f.down(val, save)
    back = top + 524
    f.arrow((rx, save.bottom), (rx, back), (14, back), (14, lr.cy), (lr.x, lr.cy))
    f.label(rx - 10, back + 16, "next step, while step < max_steps", colour=MUTED, anchor="end")
    return f


def kv_cache() -> Figure:
    """The KV cache over a prefill and two decoding steps."""
    f = Figure("kv_cache", 720, 590, "The KV cache during decoding",
               "Three stages of generating from a three-token prompt, for one layer's cache, "
               "which is preallocated to max_len = 6 positions. Prefill: the prompt t_1 to t_3 "
               "goes through the model in one pass, which writes k_1 to k_3 and v_1 to v_3 and "
               "gives the next token t_4. Step 1: only t_4 is fed; its k_4 and v_4 are "
               "appended and its query q_4 attends over positions 1 to 4, giving t_5. Step 2: "
               "only t_5 is fed; k_5 and v_5 are appended and q_5 attends over positions 1 to "
               "5. Every layer has such a K and V cache.")
    swatches = [("cached", "cached"), ("new", "written in this pass"),
                ("empty", "preallocated, still empty")]
    x = 20
    for style, text in swatches:
        f.rect(Rect(x, 14, 22, 16), style)
        x = f.label(x + 30, 22, text, anchor="start").right + 28
    f.label(20, 50, "Every layer has its own K and V cache, each (B, n_head, max_len, head_dim); "
            "one layer shown.", anchor="start", colour=MUTED)
    cell, left, max_len = 46, 250, 6
    stages = [("prefill", ["feed the prompt t_{1} t_{2} t_{3}:", "q, k, v for 3 tokens"], 0, 3),
              ("step 1", ["feed t_{4} only:", "q, k, v for 1 token"], 3, 4),
              ("step 2", ["feed t_{5} only:", "q, k, v for 1 token"], 4, 5)]
    for i, (name, feed, old, length) in enumerate(stages):
        y0 = 70 + 156 * i
        f.rule(20, 700, y0)
        f.label(20, y0 + 22, name, anchor="start", bold=True)
        f.lines(20, y0 + 62, feed, anchor="start", colour=MUTED)
        written = range(old, length)
        first, last = left + old * cell, left + length * cell
        what = (f"write k, v for positions {old + 1}–{length}" if length - old > 1
                else f"append k_{{{length}}}, v_{{{length}}}")
        f.label((first + last) / 2, y0 + 16, what, colour=MUTED)
        f.arrow(((first + last) / 2, y0 + 26), ((first + last) / 2, y0 + 38))
        for row, letter in ((0, "k"), (1, "v")):
            cy = y0 + 56 + row * 36
            f.label(left - 10, cy, letter.upper(), anchor="end", bold=True)
            for j in range(max_len):
                style = "new" if j in written else "cached" if j < old else "empty"
                f.box(left + (j + 0.5) * cell, cy, cell - 4, 30,
                      [f"{letter}_{{{j + 1}}}"] if style != "empty" else [], style)
        yb = y0 + 118
        f.arrow((left, yb - 5), (left, yb), (last, yb), (last, yb - 5), head=False)
        seen = (f"causal attention among positions 1–{length}" if old == 0
                else f"q_{{{length}}} attends over positions 1–{length}")
        f.label((left + last) / 2, yb + 16, seen, colour=MUTED)
        f.lines(560, y0 + 74, [f"cache.length = {length}", f"next token: t_{{{length + 1}}}"],
                anchor="start")
    f.rule(20, 700, 538)
    f.label(360, 566, "o_{t} = Σ_{s ≤ t} softmax_{s}(q_{t} · k_{s} / √d_{h}) v_{s}: the old "
            "keys and values are reused, never recomputed")
    return f


FIGURES: dict[str, Callable[[], Figure]] = {
    "attention_qkv": attention_qkv,
    "multi_head": multi_head,
    "prenorm_block": prenorm_block,
    "gpt2_model": gpt2_model,
    "training_loop": training_loop,
    "kv_cache": kv_cache,
    "bpe_merges": bpe_merges,
    "sliding_windows": sliding_windows,
    "beam_search": beam_search,
    "classify_last_token": classify_last_token,
    "instruction_masking": instruction_masking,
    "strided_windows": strided_windows,
}


def render_all() -> dict[str, str]:
    """Every figure's SVG text, by file stem."""
    return {name: build().svg() for name, build in FIGURES.items()}


def main(argv: list[str] | None = None, out_dir: Path = IMAGES) -> int:
    """Write the SVGs to `out_dir`, or with --check report the ones that are out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a file differs from what would be written")
    args = parser.parse_args(argv)
    stale = []
    for name, svg in render_all().items():
        path = out_dir / f"{name}.svg"
        if not args.check:
            path.write_text(svg, encoding="utf-8", newline="\n")
        elif not path.is_file() or path.read_text(encoding="utf-8") != svg:
            stale.append(path)
    for path in stale:
        print(f"{path} is out of date: run python scripts/diagrams.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
