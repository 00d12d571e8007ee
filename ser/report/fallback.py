"""The fallback renderer: the prepared pages as HTML with mistune and nbconvert, without Quarto.

Renders the same prepared sources as Quarto would, with the site's navbar and figures
inlined from the staged notebooks. Why the fallback was used is said in small print: in
the run-status section (:data:`ser.report.sections.RENDER_NOTE`) and in each page's
footer, never in a box above what a reader came for. Inline TeX (``$T$``) is rendered as
HTML (:func:`ser.report.readable.inline_math`): no MathJax, no network.
"""

from __future__ import annotations

import base64
import copy
import html
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat

from ser.core import paths
from ser.report.notebooks import Figure, cell_options, front_matter, split_front_matter
from ser.report.pages import EMBED, ReportContext
from ser.report.project import PAGES, quarto_config, write_text
from ser.report.readable import inline_math
from ser.report.sections import fmt_when, render_note
from ser.report.state import StageState

#: Folder of the report's static assets (fallback CSS, nbconvert template).
ASSETS: Path = paths.ROOT / "report"


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^\w\s-]", "", re.sub(r"<[^>]+>", "", text)).strip().lower()
    base = re.sub(r"[\s_]+", "-", base) or "section"
    slug, n = base, 1
    while slug in used:
        n += 1
        slug = f"{base}-{n}"
    used.add(slug)
    return slug


def _markdown_renderer() -> tuple[Any, list[tuple[int, str, str]]]:
    import mistune

    toc: list[tuple[int, str, str]] = []
    used: set[str] = set()

    class Renderer(mistune.HTMLRenderer):
        def heading(self, text: str, level: int, **attrs: Any) -> str:
            m = re.search(r"\s*\{#([\w-]+)\}\s*$", text)
            if m:
                text, slug = text[: m.start()], m.group(1)
                used.add(slug)
            else:
                slug = _slug(text, used)
            toc.append((level, slug, text))
            return f'<h{level} id="{slug}">{text}</h{level}>\n'

    md = mistune.create_markdown(renderer=Renderer(escape=False),
                                 plugins=["table", "strikethrough", "footnotes"])
    return md, toc


def _callouts_to_html(text: str) -> str:
    """Quarto fenced divs (``::: {.callout-note title="…"}``) → HTML divs."""
    out, depth = [], 0
    for line in text.split("\n"):
        m = re.match(r"^\s*:{3,}\s*(?:\{([^}]*)\}|([\w-]+))\s*$", line)
        if m:
            attrs = m.group(1) or "." + m.group(2)
            classes = re.findall(r"(?:^|\s)\.([\w-]+)", attrs)
            ident = re.search(r"(?:^|\s)#([\w-]+)", attrs)
            title = re.search(r'title="([^"]*)"', attrs)
            if any(c.startswith("callout") for c in classes):
                classes = ["callout", *classes]
            id_attr = f' id="{ident.group(1)}"' if ident else ""
            out.append(f'<div class="{" ".join(classes)}"{id_attr}>')
            if title:
                out.append(f'<div class="callout-title">{html.escape(title.group(1))}</div>')
            out.append("")
            depth += 1
        elif depth and re.match(r"^\s*:{3,}\s*$", line):
            out += ["", "</div>", ""]
            depth -= 1
        else:
            out.append(line)
    return "\n".join(out)


def _figure_html(fig: Figure, *, number: int, state: StageState, href: str | None) -> str:
    imgs = []
    for mime, payload in fig.images:
        data = (base64.b64encode(payload.encode("utf-8")).decode("ascii")
                if mime == "image/svg+xml" else payload)
        imgs.append(f'<img src="data:{mime};base64,{data}" alt="{html.escape(fig.alt)}">')
    cap = f"<strong>Figure {number}:</strong> {html.escape(fig.caption)}" if fig.caption else ""
    src = (f'<div class="ser-figure-source">Source: <a href="{href}">{html.escape(state.title)}'
           f"</a></div>" if href else "")
    return (f'<figure class="ser-figure" id="{html.escape(fig.label)}">{"".join(imgs)}'
            f"<figcaption>{cap}</figcaption>{src}</figure>")


def _rel(target: str, page: str) -> str:
    """Link from site page ``page`` to site path ``target`` (both site-relative)."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


def _site_path(src: str) -> str:
    """Site path of a Quarto source: ``methods.qmd`` → ``methods.html``."""
    return re.sub(r"\.(qmd|ipynb|md)$", ".html", src)


def _fix_links(body: str, page: str) -> str:
    def fix(m: re.Match[str]) -> str:
        url = m.group(2)
        if re.match(r"^(?:[a-z]+:|#|/)", url):
            return m.group(0)
        path, _, frag = url.partition("#")
        new = _rel(_site_path(path), page) + (f"#{frag}" if frag else "")
        return f'{m.group(1)}"{new}"'
    return re.sub(r'(href=)"([^"]+)"', fix, body)


def _markdown_page(text: str, ctx: ReportContext, *, page: str, numbering: list[int],
                   link_pages: bool) -> tuple[dict[str, Any], str, list[tuple[int, str, str]]]:
    meta, body = split_front_matter(text)
    figures: list[str] = []

    def embed(m: re.Match[str]) -> str:
        stage, label = Path(m.group(1)).stem, m.group(2)
        state = ctx.state(stage)
        fig = ctx.figures.get(stage, {}).get(label)
        if state is None or fig is None:  # prepare_markdown replaced these already
            return ""
        numbering[0] += 1
        href = _rel(_site_path(state.page), page) if link_pages else None
        figures.append(_figure_html(fig, number=numbering[0], state=state, href=href))
        return f"\n<!--ser-figure-{len(figures) - 1}-->\n"
    body = inline_math(EMBED.sub(embed, body))
    md, toc = _markdown_renderer()
    out = md(_callouts_to_html(body))
    for i, fig_html in enumerate(figures):
        out = out.replace(f"<!--ser-figure-{i}-->", fig_html)
    return meta, _fix_links(out, page), toc


def _nav_html(ctx: ReportContext, *, page: str, self_contained: bool) -> str:
    cfg = quarto_config()
    site = cfg.get("website", {})
    status = {s.page: s.status for s in ctx.states}
    parts = [(f'<a class="ser-brand" href="{_rel("index.html", page)}">'
              f'{html.escape(str(site.get("title", "Report")))}</a>')]

    def link(item: Mapping[str, Any]) -> str:
        href = str(item.get("href", ""))
        target = _site_path(href)
        cls = ["active"] if target == page else []
        if href in status and status[href] != "ok":
            cls.append(f"ser-status-{status[href].replace(' ', '-')}")
        title = f' title="{status[href]}"' if href in status and status[href] != "ok" else ""
        cls_attr = f' class="{" ".join(cls)}"' if cls else ""
        return (f'<a href="{_rel(target, page)}"{cls_attr}{title}>'
                f'{html.escape(str(item.get("text", Path(href).stem)))}</a>')

    for side in ("left", "right"):
        for item in site.get("navbar", {}).get(side, []) or []:
            if "menu" in item:
                links = "".join(link(sub) for sub in item["menu"] if "href" in sub)
                parts.append(f'<span class="ser-nav-group"><span class="ser-nav-label">'
                             f'{html.escape(str(item.get("text", "")))}</span>{links}</span>')
            elif "href" in item:
                parts.append(link(item))
    if self_contained:
        parts.append(link({"href": "report.html", "text": "Single-file report"}))
    return f'<nav class="ser-nav">{"".join(parts)}</nav>'


def _footer(ctx: ReportContext, reason: str) -> str:
    run = ctx.run or {}
    bits = [f"profile {run.get('profile', '–')}"]
    if run.get("finished_utc"):
        bits.append(f"run finished {fmt_when(run['finished_utc'])}")
    if run.get("params_hash"):
        bits.append(f"parameters {str(run['params_hash'])[:12]}")
    note = f'<br><small class="ser-render-note">{html.escape(reason)}</small>' if reason else ""
    return (f'<footer class="ser-footer">Rendered by ser.report (nbconvert fallback) · '
            f"{html.escape(' · '.join(bits))}{note}</footer>")


def _css() -> str:
    path = ASSETS / "fallback.css"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the fallback site needs its stylesheet")
    return path.read_text(encoding="utf-8")


def _toc_html(toc: Sequence[tuple[int, str, str]]) -> str:
    items = [f'<li><a href="#{slug}">{text}</a></li>' for level, slug, text in toc if level == 2]
    if len(items) < 2:
        return ""
    return (f'<aside class="ser-toc"><nav><div class="ser-toc-title">On this page</div>'
            f'<ul>{"".join(items)}</ul></nav></aside>')


def _title_block(meta: Mapping[str, Any]) -> str:
    out = f'<header class="ser-page-header"><h1>{html.escape(str(meta.get("title", "")))}</h1>'
    for key in ("subtitle", "description"):
        if meta.get(key):
            out += f'<p class="ser-subtitle">{html.escape(str(meta[key]))}</p>'
            break
    return out + "</header>"


def _html_page(*, title: str, nav: str, header: str, body: str, toc: str,
               footer: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{_css()}\n</style>\n</head>\n"
            f'<body class="ser-page">\n{nav}\n<div class="ser-layout">\n'
            f'<main class="ser-main">\n{header}\n{body}\n</main>\n{toc}\n</div>\n{footer}\n'
            f"</body>\n</html>\n")


def _notebook_html(nb: nbformat.NotebookNode, state: StageState, ctx: ReportContext, *, page: str,
                   reason: str, self_contained: bool) -> str:
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    meta = front_matter(nb)
    if meta:
        nb.cells = nb.cells[1:]
    kept = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = inline_math(_callouts_to_html(cell.source))
        elif cell.cell_type == "code":
            opts = cell_options(cell.source)
            if opts.get("include") is False:
                continue
            cell.source = "\n".join(ln for ln in cell.source.splitlines()
                                    if not ln.startswith("#|"))
            if opts.get("echo") is False:
                cell.metadata["ser_hide_input"] = True
            if opts.get("output") is False:
                cell.outputs = []
            if opts.get("label") and (opts.get("fig-alt") or opts.get("fig-cap")):
                cell.metadata["ser_alt"] = str(opts.get("fig-alt") or opts.get("fig-cap"))
            if opts.get("fig-cap"):
                cell.metadata["ser_caption"] = f"Figure ({opts['label']}): {opts['fig-cap']}"
        elif cell.cell_type == "raw":
            continue
        kept.append(cell)
    nb.cells = kept
    badge = (f'<span class="ser-badge ser-badge-{state.status.replace(" ", "-")}">'
             f"{html.escape(state.status)}</span>")
    secs = f" · {state.seconds:.0f} s" if state.seconds is not None else ""
    header = (f'<header class="ser-page-header"><h1>{html.escape(state.title)}</h1>'
              + (f'<p class="ser-subtitle">{html.escape(str(meta["description"]))}</p>'
                 if meta.get("description") else "")
              + f'<div class="ser-meta">Stage <code>{html.escape(state.stage)}</code> {badge}'
                f"{secs} · code is folded: open “Code” to read it</div></header>")
    exporter = HTMLExporter(template_name="ser_fallback",
                            extra_template_basedirs=[str(ASSETS / "templates")],
                            exclude_input_prompt=True, exclude_output_prompt=True)
    resources = {"ser": {"css": _css(),
                         "shell_top": _nav_html(ctx, page=page,
                                                         self_contained=self_contained)
                         + '<div class="ser-layout">',
                         "shell_bottom": "</div>" + _footer(ctx, reason),
                         "page_header": header},
                 "metadata": {"name": state.title}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    return body


def render_fallback(ctx: ReportContext, pages: Mapping[str, str], site: Path, *, reason: str,
                    self_contained: bool) -> None:
    """Write the site (and ``report.html`` when ``self_contained``) to ``site``, replacing it.

    Args:
        ctx: the run's report context.
        pages: prepared sources by name (:func:`ser.report.pages.prepare_pages`).
        site: the site folder, ``results/site``.
        reason: why the fallback renders, in small print in every page's footer and in
            the run-status section (the sources' :data:`ser.report.sections.RENDER_NOTE`).
        self_contained: also write the single-file ``report.html``.
    """
    if site.exists():
        shutil.rmtree(site)
    site.mkdir(parents=True)
    pages = render_note(pages, f"Rendered without Quarto: {reason}")
    numbering = {p: [0] for p in (*PAGES, "report.qmd")}
    for src in PAGES:
        page = _site_path(src)
        meta, body, toc = _markdown_page(pages[src], ctx, page=page, numbering=numbering[src],
                                         link_pages=True)
        doc = _html_page(title=str(meta.get("title", page)),
                         nav=_nav_html(ctx, page=page, self_contained=self_contained),
                         header=_title_block(meta), body=body, toc=_toc_html(toc),
                         footer=_footer(ctx, reason))
        write_text(site / page, doc)
    for state in ctx.states:
        page = _site_path(state.page)
        doc = _notebook_html(ctx.notebooks[state.stage], state, ctx, page=page, reason=reason,
                             self_contained=self_contained)
        write_text(site / page, doc)
    if self_contained:
        meta, body, toc = _markdown_page(pages["report.qmd"], ctx, page="report.html",
                                         numbering=numbering["report.qmd"], link_pages=False)
        body = re.sub(r'href="(?!#|data:)[^"]*"', 'href="#"', body)  # no links out of the file
        doc = _html_page(title=str(meta.get("title", "Report")), nav="",
                         header=_title_block(meta), body=body, toc=_toc_html(toc),
                         footer=_footer(ctx, reason))
        write_text(site / "report.html", doc)
