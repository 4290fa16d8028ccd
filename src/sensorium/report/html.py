"""A tiny self-contained HTML page builder: sections of headings, tables, text and inline PNGs."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .muted { color: #777; font-size: 0.85em; }
"""


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, text: str, muted: bool = False) -> Section:
        cls = ' class="muted"' if muted else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def image(self, png: bytes, alt: str = "") -> Section:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
        return self

    def images(self, pngs, alt: str = "") -> Section:
        """Each figure that exists: `curves_png` gives None for metrics the run did not log."""
        for png in pngs:
            if png is not None:
                self.image(png, alt)
        return self

    def table(self, header: list[str], rows: list[list]) -> Section:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")
        return self


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def page(title: str, sections: list[Section], subtitle: str = "") -> str:
    body = "".join(f"<h2>{html.escape(s.title)}</h2>{''.join(s.parts)}" for s in sections)
    sub = f'<p class="muted">{html.escape(subtitle)}</p>' if subtitle else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>\n")
