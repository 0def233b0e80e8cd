"""The ablation report's document, rendered twice: Markdown (README.md) and a
self-contained HTML page (inline CSS, PNGs base64-embedded, so it opens offline).

A document is a list of blocks: `("h1" | "h2" | "p", text)`, `("ul", [item, ...])`,
`("table", header, rows)` and `("img", path, alt)`. Text may hold `code` spans;
nothing else of Markdown is read.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def to_markdown(blocks, out: Path) -> str:
    parts = []
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            parts.append(("#" if kind == "h1" else "##") + " " + args[0])
        elif kind == "p":
            parts.append(args[0])
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in args[0]))
        elif kind == "table":
            parts.append(_md_table(*args))
        elif kind == "img":
            parts.append(f"![{args[1]}]({Path(args[0]).relative_to(out).as_posix()})")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text, quote=False))


CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
       "color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
       "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
       "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
       "img{max-width:100%;display:block;margin:1em 0}code{background:#f3f3f3;padding:0 3px}")


def to_html(blocks, title: str) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>"]
    for kind, *args in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{_inline(args[0])}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline(args[0])}</p>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in args[0]) + "</ul>")
        elif kind == "table":
            header, rows = args
            parts.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                                   for r in rows) + "</table>")
        elif kind == "img":
            data = base64.b64encode(Path(args[0]).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{html.escape(args[1])}' src='data:image/png;base64,{data}'>")
    return "\n".join(parts + ["</body></html>\n"])
