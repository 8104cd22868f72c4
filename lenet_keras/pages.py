"""The page toolkit of every report (one experiment's, compare, reproduce, sweeps).

Tables as GitHub Markdown and HTML (`markdown_table`, `html_table`), paths as pages show them
(`display_path`: relative to the working directory when near it, else as given, never made
machine-absolute), Markdown inline text as HTML (`inline_html`: the HTML holds no Markdown),
GitHub-style heading anchors and tables of contents (`heading_anchor`, `write_pages`), and
replacing a report folder whole (`publish`, never half-written).
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of `table` (floats with 4 decimals)."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def html_table(table: pd.DataFrame) -> str:
    """An HTML table of `table` (floats with 4 decimals)."""
    return table.to_html(index=False, na_rep="", float_format=lambda v: _fmt(float(v)), border=0, classes="runs")


def display_path(path: str | os.PathLike, max_up: int = 2) -> str:
    """A path as a report shows it: relative to the working directory when under it or a near relative.

    `path` relative: returned as given. `path` absolute: `os.path.relpath` from the current
    working directory when that climbs at most `max_up` folders (`../datasets/mnist`) and
    the two share more than the filesystem root; else the path as given. Symlinks are never
    resolved (`os.path`, not `Path.resolve`), so the result is no more machine-absolute than `path`.
    """
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    cwd = os.getcwd()
    try:
        relative = os.path.relpath(text, cwd)
        common = os.path.commonpath([os.path.abspath(text), cwd])
    except ValueError:  # another drive (Windows)
        return text
    if os.path.dirname(common) == common:  # only the root in common: /tmp/x seen from /work/main
        return text
    if relative.split(os.sep)[:max_up + 1].count(os.pardir) > max_up:
        return text
    return relative


def inline_html(text: str) -> str:
    """Markdown inline text (`code` spans, **bold**) as HTML: escaped, code spans as <code>, bold as <strong>.

    For texts written once for both index.md and index.html, so the HTML never shows Markdown.
    """
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
          "img{max-width:100%;margin:.5em 0}table.runs{border-collapse:collapse;font-size:.85em;margin:.5em 0}"
          "table.runs td,table.runs th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right}"
          "table.runs td:first-child,table.runs th:first-child{text-align:left}"
          ".row{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}.warn{color:#b2182b}"
          ".best{background:#e6f5d0;padding:.5em 1em;border-left:4px solid #1a9641}"
          "code{background:#f4f4f4;padding:0 .2em;overflow-wrap:anywhere}"
          "nav.toc{font-size:.9em;margin:1em 0}nav.toc ul{margin:.3em 0;padding-left:1.2em}")


def heading_anchor(text: str) -> str:
    """The GitHub-style anchor of a heading: lower case, punctuation dropped, spaces as hyphens.

    `heading_anchor("run-001: test accuracy 0.9812")` is `"run-001-test-accuracy-09812"`;
    `write_pages` gives the HTML headings the same ids, so one link works in both pages
    (repeats get `-1`, `-2`... as on GitHub).
    """
    text = html.unescape(re.sub(r"<[^>]+>", "", text)).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _unique(anchor: str, seen: dict) -> str:
    """`anchor`, or `anchor-N` when it was handed out before (GitHub's rule); counts in `seen`."""
    count = seen.get(anchor, 0)
    seen[anchor] = count + 1
    return anchor if count == 0 else f"{anchor}-{count}"


def markdown_contents(md: list[str]) -> list[str]:
    """The Markdown lines of a table of contents of `md`'s `## ` headings (empty when fewer than two)."""
    seen: dict = {}
    titles = [line[3:].strip() for line in md if line.startswith("## ")]
    if len(titles) < 2:
        return []
    return ["Contents:", "", *[f"- [{t}](#{_unique(heading_anchor(t), seen)})" for t in titles], ""]


def html_contents(page: list[str]) -> tuple[list[str], str]:
    """`page` with an `id` on every `<h2>` (kept when it has one), and the HTML of its table of
    contents (a `<nav class='toc'>` list of links; empty when fewer than two headings)."""
    seen: dict = {}
    entries = []

    def add_id(match: re.Match) -> str:
        """The matched `<h2>` with an `id` (its own, or a unique anchor of its text); records the entry."""
        attributes, inner = match.group(1) or "", match.group(2)
        found = re.search(r"""\bid=['"]([^'"]+)['"]""", attributes)
        anchor = found.group(1) if found else _unique(heading_anchor(inner), seen)
        entries.append((anchor, re.sub(r"<[^>]+>", "", inner)))
        return match.group(0) if found else f"<h2 id='{html.escape(anchor, quote=True)}'{attributes}>{inner}</h2>"

    page = [re.sub(r"<h2(\s[^>]*)?>(.*?)</h2>", add_id, fragment, flags=re.S) for fragment in page]
    if len(entries) < 2:
        return page, ""
    links = "".join(f"<li><a href='#{html.escape(a, quote=True)}'>{t}</a></li>" for a, t in entries)
    return page, f"<nav class='toc'><strong>Contents</strong><ul>{links}</ul></nav>"


def plain_html(fragment: str) -> str:
    """`fragment` with Markdown code spans left in its text (outside tags, `<code>` and `<pre>`)
    turned into `<code>` elements: a safety net so no page shows Markdown backticks."""
    out, inside = [], 0
    for part in re.split(r"(<[^>]*>)", fragment):
        if part.startswith("<"):
            tag = re.match(r"</?\s*(\w+)", part)
            if tag and tag.group(1).lower() in ("code", "pre"):
                inside += -1 if part.startswith("</") else 1
            out.append(part)
        else:
            out.append(part if inside else re.sub(r"`([^`]+)`", r"<code>\1</code>", part))
    return "".join(out)


def _insert_before_first_h2(lines: list[str], block: list[str], is_h2) -> list[str]:
    """`lines` with `block` inserted before the first line where `is_h2(line)` (at the end if none)."""
    at = next((i for i, line in enumerate(lines) if is_h2(line)), len(lines))
    return [*lines[:at], *block, *lines[at:]]


def write_pages(out: Path, name: str, md: list[str], page: list[str], contents: bool = True) -> None:
    """Write `index.md` and `index.html` (lines `md` and HTML fragments `page`) into `out`.

    With `contents` (the default), both get a table of contents before their first second-level
    heading: in index.md a list of links to the `## ` headings (GitHub anchors, `heading_anchor`),
    in index.html links to every `<h2>`, which get matching `id`s. Code spans left in the HTML
    text become `<code>` (`plain_html`).
    """
    page = [plain_html(fragment) for fragment in page]
    if contents:
        md = _insert_before_first_h2(md, markdown_contents(md), lambda line: line.startswith("## "))
        page, toc = html_contents(page)
        if toc:
            page = _insert_before_first_h2(page, [toc], lambda fragment: "<h2" in fragment)
    (out / "index.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out / "index.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(name)} report</title>"
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(page) + "\n</body></html>\n",
        encoding="utf-8",
    )


def publish(out: Path, final: Path) -> None:
    """Replace the report folder `final` with the freshly written `out` (never half-written)."""
    backup = final.with_name(f".{final.name}.old")
    shutil.rmtree(backup, ignore_errors=True)
    if final.exists():
        final.replace(backup)
    out.replace(final)
    shutil.rmtree(backup, ignore_errors=True)
