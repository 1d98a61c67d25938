"""Build the documentation site offline, without Quarto (which cannot be installed offline).

Every notebook in nbs/ (index first, then in file-name order) is

1. rendered with the outputs committed in it (notebooks are committed with their outputs: `make nbs` re-runs
   them); with `--execute`, executed again with nbconvert's `ExecutePreprocessor`, in working directory `_proc/` (nbdev's processed-notebook
   folder: it sits beside nbs/, so `../data` resolves the same way, and `proc_nbs` has synced nbs/'s figures and
   styles into it; what notebooks write there stays out of the work tree). Environment: HIPERF_PROGRESS=0, and
   the kernels get matplotlib's inline backend (MPLBACKEND=Agg, used by this process, would drop the figures).
   Cells flagged with settings.ini's `tst_flags` (`#| slow`, `#| gpu`) and `#| eval: false` cells are not
   executed (their code shows with a note), nor is the `nbdev_export()` cell. Execution comes before nbdev's
   processing because processing removes the `#| export` cells the rest of the notebook needs;
2. processed by nbdev's docs pipeline exactly as `nbdev.serve.proc_nbs` processes each notebook for Quarto
   (`nbdev.serve_drv.exec_nb` with `FilterDefaults`): frontmatter from the `# Title` / `> description` cell,
   `#| hide` and `#| export` cells removed, `show_doc` API sections (signatures with docments) added;
3. rendered to HTML with nbconvert into `<out>/<page>.html`, where `<page>` is the name nbdev gives the page
   in the Quarto site (`00_core.ipynb` -> `core.html`, `index.ipynb` -> `index.html`), so nbdev's symbol
   links (`core.html#hiperferror`) work offline too. Every page has the same header and sidebar (every page
   in order, the current page's sections); `index.html` also lists every page with its description.

Figures come inline (data URIs) or as files copied next to the pages (nbs/figures, figures the notebooks
wrote, images the markdown references); `styles.css` is copied as well.

With `--execute`, notebooks run their full workloads; `--quick` sets IN_TEST=1 as `nbdev_test` does, so
notebooks shrink them. A notebook that fails to execute still gets a page (code
without outputs, the error on top); the build goes on and exits with status 1 naming it.
Where Quarto is installed, `nbdev_docs` renders the real Quarto site from the same `_quarto.yml`
(`--quarto` runs it from here). Run from anywhere:

    python scripts/build_docs.py                  # the whole site into _docs/ from the committed outputs (make docs)
    python scripts/build_docs.py --execute        # execute every notebook again first
    python scripts/build_docs.py --only index 06_graphs --out /tmp/site
    python scripts/check_docs.py                  # check the result in headless Chromium
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jinja2 import DictLoader
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
PROC = ROOT / "_proc"  # nbdev's processed-notebook folder (gitignored); also the execution working directory
MARKER = ".hiperf-docs"  # marks an output folder this script owns (stale pages are removed only there)
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


class DocsError(Exception):
    "A docs build step failed; the message names the notebook and what went wrong."


# ---------------------------------------------------------------------------------------------- notebooks
def notebooks(nbs: Path = NBS, only: list[str] | None = None) -> list[Path]:
    "Notebooks of `nbs` (no `_`/`.` names), `index.ipynb` first then sorted; `only` keeps the named ones."
    nbs_ = sorted(p for p in nbs.glob("*.ipynb") if not p.name.startswith(("_", ".")))
    nbs_.sort(key=lambda p: (p.stem != "index", p.name))
    if not only: return nbs_
    want = {Path(o).name.removesuffix(".ipynb") for o in only}
    unknown = want - {p.stem for p in nbs_}
    if unknown: raise DocsError(f"--only: no notebook {', '.join(sorted(unknown))} in {nbs} "
                                f"(have: {', '.join(p.stem for p in nbs_)})")
    return [p for p in nbs_ if p.stem in want]


def page_name(nb_path: Path) -> str:
    "The HTML page nbdev/Quarto give a notebook: numeric prefix dropped, lower case (`00_core` -> `core.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(nb_path)).name


def frontmatter(nb_path: Path) -> dict:
    "Title and description of a notebook, from its `# Title` / `> description` cell (nbdev's FrontmatterProc)."
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    try: fm = dict(NBProcessor(nb_path, procs=FrontmatterProc, process=True).nb.frontmatter_)
    except Exception as e: raise DocsError(f"{nb_path.name}: cannot read its title cell ({e})") from e
    fm.setdefault("title", nb_path.stem)
    fm.setdefault("description", "")
    return fm


def site_pages(nbs: list[Path]) -> list[dict]:
    "One entry per notebook: source stem, page file name, title, description (the site's navigation)."
    return [dict(stem=p.stem, page=page_name(p), **{k: frontmatter(p)[k] for k in ("title", "description")})
            for p in nbs]


def tst_flags() -> set[str]:
    "Cell flags that are never executed (settings.ini `tst_flags`, e.g. `slow gpu`)."
    from nbdev.config import get_config
    return {f for f in re.split(r"[|,\s]+", get_config(path=ROOT).get("tst_flags", "")) if f}


# ---------------------------------------------------------------------------------------------- execution
def cell_directives(cell) -> dict:
    "nbdev/Quarto `#|` directives at the top of a code cell, as nbdev parses them (`{'slow': [], 'eval:': [...]}`)."
    from nbdev.process import extract_directives
    return extract_directives(nbformat.from_dict(dict(cell)), remove=False) if cell.cell_type == "code" else {}


def skip_reason(cell, flags: set[str]) -> str | None:
    "Why a code cell is not executed for the docs (a tst_flag, `eval: false`, the export cell), or None."
    if cell.cell_type != "code": return None
    if "nbdev_export" + "(" in cell.source: return "export"
    d = cell_directives(cell)
    hit = sorted(flags & d.keys())
    if hit: return hit[0]
    if d.get("eval:", [""])[0].lower() == "false": return "eval: false"
    return None


class FlaggedExecutePreprocessor(ExecutePreprocessor):
    "`ExecutePreprocessor` that leaves flagged cells (see `skip_reason`) unexecuted and marks them for the page."
    skip_flags: set = set()

    def preprocess_cell(self, cell, resources, index):
        self.current_cell = index
        why = skip_reason(cell, self.skip_flags)
        if why is None: return super().preprocess_cell(cell, resources, index)
        if why != "export": cell.metadata["hiperf_docs_skipped"] = why
        return cell, resources

    def start_new_kernel(self, **kwargs):
        "Start the kernel with inline matplotlib figures, whatever MPLBACKEND this process uses."
        kwargs.setdefault("env", {**os.environ, "MPLBACKEND": INLINE_BACKEND})
        return super().start_new_kernel(**kwargs)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def execute(nb_path: Path, cwd: Path, timeout: int, flags: set[str]):
    "Execute notebook `nb_path` in `cwd` (flagged cells skipped); return it, or `DocsError` naming the cell."
    nb = nbformat.read(nb_path, as_version=4)
    ep = FlaggedExecutePreprocessor(timeout=timeout, kernel_name="python3", allow_errors=False,
                                    extra_arguments=["--IPKernelApp.log_level=ERROR"])
    ep.skip_flags = flags
    try: ep.preprocess(nb, {"metadata": {"path": str(cwd)}})
    except CellExecutionError as e:
        lines = [ln for ln in _ANSI.sub("", str(e)).splitlines() if ln.strip()]
        cell = getattr(ep, "current_cell", -1) + 1
        raise DocsError(f"{nb_path.name} failed to execute (cell {cell}): {e.ename}: {_ANSI.sub('', e.evalue)}\n  "
                        + "\n  ".join(lines[-12:])) from None
    except CellTimeoutError as e: raise DocsError(f"{nb_path.name}: a cell ran longer than --timeout {timeout} s ({e})") from None
    except DeadKernelError as e: raise DocsError(f"{nb_path.name}: the kernel died (out of memory?): {e}") from None
    return nb


def slowest_cell(nb) -> tuple[int, float, str]:
    "Position (1-based), seconds and first code line of the slowest executed cell (nbclient's timestamps)."
    from datetime import datetime
    best = (0, 0.0, "")
    for i, c in enumerate(nb.cells, 1):
        t = c.get("metadata", {}).get("execution", {})
        a, b = t.get("iopub.execute_input"), t.get("shell.execute_reply")
        if not (a and b): continue
        dt = (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()
        first = next((ln for ln in c.source.splitlines() if ln.strip() and not ln.startswith("#|")), "")
        if dt > best[1]: best = (i, dt, first[:50])
    return best


def nbdev_process(src: Path, dst: Path) -> list[str]:
    """Run nbdev's docs processors on notebook `src` into `dst`, as `proc_nbs` does for each notebook; return
    nbdev's warnings as one-line notes (e.g. a cell mixing imports and other code)."""
    import warnings
    import nbdev.serve_drv
    from nbdev.processors import FilterDefaults
    saved = os.environ.get("IN_TEST")
    os.environ["IN_TEST"] = "1"  # what nbdev.serve_drv.main sets while processing
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nbdev.serve_drv.exec_nb(src, dst, FilterDefaults)
    except Exception as e: raise DocsError(f"{src.name}: nbdev's docs processing failed: {e}") from e
    finally:
        if saved is None: os.environ.pop("IN_TEST", None)
        else: os.environ["IN_TEST"] = saved
    notes = [str(w.message).strip().splitlines()[0] for w in caught if issubclass(w.category, UserWarning)]
    return [f"{n} x nbdev: {m}" if n > 1 else f"nbdev: {m}" for m, n in _counts(notes)]


def _counts(items: list[str]) -> list[tuple[str, int]]:
    "Distinct items with their counts, in first-seen order."
    out: dict[str, int] = {}
    for i in items: out[i] = out.get(i, 0) + 1
    return list(out.items())


def sync_proc_folder() -> Path:
    "nbdev's `proc_nbs` without its notebooks: syncs nbs/ figures, styles.css and _quarto.yml into `_proc/`."
    from nbdev.serve import proc_nbs
    try: cache = proc_nbs(n_workers=0, skip_file_re=r"^[_.]|\.ipynb$")
    except Exception as e: raise DocsError(f"nbdev proc_nbs failed: {e}") from e
    cache.mkdir(exist_ok=True)
    return cache


# ---------------------------------------------------------------------------------------------- rendering
_QUARTO_DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")
_PANDOC_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}")


def quarto_options(cell) -> dict:
    "Remove the leading `#| key: value` Quarto options from a code cell's source and return them."
    lines, opts = cell.source.splitlines(), {}
    while lines and (m := _QUARTO_DIRECTIVE.match(lines[0])):
        opts[m.group(1)] = m.group(2).strip("'\"").lower()
        lines.pop(0)
    cell.source = "\n".join(lines)
    return opts


def pandoc_links_to_html(md: str) -> str:
    "`[text](url){target=... style=...}` (Pandoc attributes, as show_doc writes them) -> an HTML link."
    def sub(m):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
        target = f' target="{html.escape(attrs["target"])}"' if "target" in attrs else ""
        return f'<a class="hp-source-link" href="{html.escape(m.group(2))}"{target}>{html.escape(m.group(1))}</a>'
    return _PANDOC_LINK.sub(sub, md)


def _note(text: str):
    "A small HTML note shown as a cell output."
    return nbformat.v4.new_output("display_data", data={"text/html": f'<div class="hp-note">{html.escape(text)}</div>'})


def prepare_cells(nb, fm: dict, error: str = "") -> None:
    "Turn nbdev's Quarto-oriented processed notebook into one nbconvert renders like Quarto would."
    cells = []
    for i, cell in enumerate(nb.cells):
        if i == 0 and cell.cell_type == "raw" and cell.source.lstrip().startswith("---"): continue  # frontmatter
        if cell.cell_type == "code":
            opts = quarto_options(cell)
            if opts.get("include") == "false": continue
            tags = set(cell.metadata.get("tags", []))
            if opts.get("echo") == "false": tags.add("hp-hide-input")
            if opts.get("output") == "false": cell.outputs = []
            if cell.source.startswith("show_doc("): tags.add("hp-api")
            for out in cell.get("outputs", []):
                if "data" in out and "text/markdown" in out.data:
                    out.data["text/markdown"] = pandoc_links_to_html(out.data["text/markdown"])
            why = cell.metadata.pop("hiperf_docs_skipped", None)
            if why: cell.outputs = [_note(f"Not executed in the docs build (#| {why}).")]
            cell.metadata["tags"] = sorted(tags)
            if not cell.source.strip() and not cell.outputs: continue
        cells.append(cell)
    desc = f'\n\n<div class="description">{html.escape(fm["description"])}</div>' if fm.get("description") else ""
    banner = (f'\n\n<div class="hp-error"><strong>This notebook failed to execute in the docs build; the page shows '
              f'its code without outputs.</strong><pre>{html.escape(error)}</pre></div>') if error else ""
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {fm['title']}{desc}{banner}")] + cells
    nb.metadata["title"] = fm["title"]


def slugify(text: str) -> str:
    "Pandoc/Quarto heading identifier: lower case, spaces -> '-', only alphanumerics and `_-.` kept."
    s = re.sub(r"[^\w\s.-]", "", text.strip().lower())
    s = re.sub(r"\s+", "-", s)
    return re.sub(r"^[^a-z]+", "", s) or "section"


def _strip_tags(s: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", s)).replace("\u00b6", "").strip()


def quarto_heading_ids(page: str) -> tuple[str, list[tuple[int, str, str]]]:
    "Give headings Quarto's ids (so nbdev's `page.html#symbol` links land) and list (level, id, text)."
    seen, heads = {}, []

    def sub(m):
        level, attrs, inner = int(m.group(1)), m.group(2), m.group(3)
        text = _strip_tags(inner)
        base = slugify(text); n = seen.get(base, 0); seen[base] = n + 1
        hid = base if n == 0 else f"{base}-{n}"
        heads.append((level, hid, text))
        attrs = re.sub(r'\s*id="[^"]*"', "", attrs)
        inner = re.sub(r'(<a class="anchor-link" href=")#[^"]*"', rf'\1#{hid}"', inner)
        return f'<h{level} id="{hid}"{attrs}>{inner}</h{level}>'
    return re.sub(r"<h([1-6])([^>]*)>(.*?)</h\1>", sub, page, flags=re.S), heads


def local_doc_links(page: str) -> str:
    "nbdev's absolute symbol links (`doc_host` + `doc_baseurl` + page) -> relative links into this site."
    from nbdev.config import get_config
    cfg = get_config(path=ROOT)
    base = cfg.get("doc_host", "").rstrip("/") + "/" + cfg.get("doc_baseurl", "").strip("/")
    return page.replace(f'href="{base.rstrip("/")}/', 'href="') if cfg.get("doc_host") else page


def number_figures(page: str) -> str:
    "Give every output image an id (`fig-1`, `fig-2`, ...) so a figure can be linked and screenshot."
    n = iter(range(1, 10**6))
    return re.sub(r"<img\b(?![^>]*\bid=)", lambda m: f'<img id="fig-{next(n)}"', page)


TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<meta name="description" content="{{ resources.hp.description | e }}">
<link rel="stylesheet" href="styles.css">
<link rel="stylesheet" href="site.css">
{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook hp-page" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<header class="hp-header"><a href="index.html">{{ resources.hp.site_title | e }}</a>
<span class="hp-tagline">{{ resources.hp.site_description | e }}</span></header>
{{ resources.hp.nav }}
<main class="hp-main">
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.hp.contents }}
<footer class="hp-footer">Built offline by scripts/build_docs.py from nbs/{{ resources.hp.source | e }}
(nbdev notebook processing + nbconvert). With Quarto installed, <code>nbdev_docs</code> renders the Quarto site.</footer>
</main>
<script>
window.addEventListener("load", function () {
  document.querySelectorAll("img").forEach(function (im) {
    im.setAttribute("data-natural-width", im.naturalWidth);
    im.setAttribute("data-top", Math.round(im.getBoundingClientRect().top + window.scrollY));
  });
  document.body.setAttribute("data-loaded", "1");
});
</script>
</body>
{% endblock body_footer %}
"""

SITE_CSS = """
html { scroll-padding-top: 60px; }
body.hp-page { margin: 0; padding: 0 !important; }
.hp-header { position: fixed; top: 0; left: 0; right: 0; height: 48px; z-index: 10; display: flex; align-items: center;
  gap: 1rem; padding: 0 1.2rem; background: #2780e3; color: #fff; font-family: system-ui, sans-serif; }
.hp-header a { color: #fff; font-weight: 600; font-size: 1.15rem; text-decoration: none; }
.hp-tagline { opacity: 0.85; font-size: 0.85rem; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.hp-sidebar { position: fixed; top: 48px; bottom: 0; left: 0; width: 250px; overflow-y: auto; padding: 1rem 0.8rem;
  box-sizing: border-box; border-right: 1px solid #e0e0e0; background: #fafafa; font-family: system-ui, sans-serif;
  font-size: 0.9rem; }
.hp-sidebar ol { list-style: none; padding-left: 0; margin: 0; }
.hp-sidebar ol ol { padding-left: 0.9rem; margin: 0.2rem 0 0.4rem; font-size: 0.82rem; }
.hp-sidebar li { margin: 0.25rem 0; }
.hp-sidebar a { color: #333; text-decoration: none; }
.hp-sidebar a:hover { color: #2780e3; }
.hp-sidebar a.active { color: #2780e3; font-weight: 600; }
main.hp-main { margin: 48px 0 0 250px; padding: 1rem 2rem 3rem; max-width: 1100px; box-sizing: border-box; }
.celltag_hp-hide-input .jp-Cell-inputWrapper { display: none; }
.celltag_hp-api .jp-OutputArea-prompt, .celltag_hp-hide-input .jp-OutputArea-prompt { display: none; }
.celltag_hp-api .jp-RenderedMarkdown h3 { font-family: monospace; margin-top: 0.4rem; }
.hp-source-link { float: right; font-size: smaller; }
.jp-RenderedHTMLCommon a code { color: #2780e3; }
.hp-note { font-style: italic; color: #777; font-size: 0.85rem; }
.hp-error { border: 1px solid #d9534f; background: #fdf0ef; padding: 0.6rem 0.9rem; margin: 1rem 0; font-size: 0.9rem; }
.hp-error pre { white-space: pre-wrap; font-size: 0.78rem; max-height: 20rem; overflow: auto; }
.hp-contents { padding-left: 4px; }
.hp-contents dt { margin-top: 0.6rem; font-weight: 600; }
.hp-contents small { font-weight: normal; color: #888; }
.hp-contents dd { margin-left: 1.2rem; color: #555; }
.hp-footer { font-family: system-ui, sans-serif; margin-top: 3rem; padding-top: 0.6rem; border-top: 1px solid #e0e0e0; color: #888; font-size: 0.8rem; }
@media (max-width: 800px) { .hp-sidebar { display: none; } main.hp-main { margin-left: 0; } }
"""


def nav_html(pages: list[dict], current: str, sections: list[tuple[int, str, str]]) -> str:
    "The sidebar: every page in order; under the current page, its `##` sections."
    items = []
    for p in pages:
        active = ' class="active" aria-current="page"' if p["page"] == current else ""
        sub = ""
        if p["page"] == current:
            subs = [f'<li><a href="#{hid}">{html.escape(t)}</a></li>' for lvl, hid, t in sections if lvl == 2]
            sub = f"<ol>{''.join(subs)}</ol>" if subs else ""
        items.append(f'<li><a href="{p["page"]}"{active} title="{html.escape(p["description"])}">'
                     f'{html.escape(p["title"])}</a>{sub}</li>')
    return f'<nav class="hp-sidebar" aria-label="Pages"><ol>{"".join(items)}</ol></nav>'


def inline_md(text: str) -> str:
    "Escape `text` for HTML, keeping its `code` spans."
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def contents_html(pages: list[dict]) -> str:
    "The index page's list of every page with its description."
    rows = "".join(f'<dt><a href="{p["page"]}">{inline_md(p["title"])}</a> <small>(nbs/{p["stem"]}.ipynb)</small></dt>'
                   f'<dd>{inline_md(p["description"])}</dd>' for p in pages if p["page"] != "index.html")
    return (f'<section class="hp-contents jp-RenderedHTMLCommon" id="contents"><h2 id="pages">Pages</h2>'
            f'<dl>{rows}</dl></section>')


def render_page(nb, fm: dict, pages: list[dict], page: str, source: str, site: dict, error: str = "") -> str:
    "Render a processed notebook to a complete HTML page with the site's header, sidebar and styles."
    prepare_cells(nb, fm, error)
    exporter = HTMLExporter(extra_loaders=[DictLoader({"hiperf.html.j2": TEMPLATE})], template_file="hiperf.html.j2",
                            exclude_input_prompt=True, exclude_output_prompt=True)
    hp = dict(site_title=site["title"], site_description=site["description"], description=fm.get("description", ""),
              contents=contents_html(pages) if page == "index.html" else "", source=source)
    body, _ = exporter.from_notebook_node(nb, resources={"hp": hp})
    body, heads = quarto_heading_ids(body)
    nav = nav_html(pages, page, heads)
    body = body.replace('<main class="hp-main">', nav + '\n<main class="hp-main">', 1)
    return number_figures(local_doc_links(body))


_NAV = re.compile(r'<nav class="hp-sidebar".*?</nav>', re.S)
_CONTENTS = re.compile(r'<section class="hp-contents.*?</section>', re.S)


def refresh_navigation(out: Path, pages: list[dict]) -> int:
    """Rewrite the sidebar (and the index's page list) of the pages already in `out`, so that pages built earlier
    (`--only`) link the notebooks that exist now; return how many pages changed."""
    changed = 0
    for p in pages:
        f = out / p["page"]
        if not f.is_file(): continue
        text = f.read_text(encoding="utf-8")
        if not _NAV.search(text): continue
        heads = [(2, hid, _strip_tags(inner)) for hid, inner in re.findall(r'<h2 id="([^"]*)"[^>]*>(.*?)</h2>', text, re.S)]
        new = _NAV.sub(lambda m: nav_html(pages, p["page"], heads), text, count=1)
        if p["page"] == "index.html": new = _CONTENTS.sub(lambda m: contents_html(pages), new, count=1)
        if new != text: f.write_text(new, encoding="utf-8"); changed += 1
    return changed


# ---------------------------------------------------------------------------------------------- assets
_IMG_REF = re.compile(r"""!\[[^\]]*\]\(\s*<?([^)\s>]+)|<img[^>]*\bsrc=["']([^"']+)""")


def copy_assets(nb_paths: list[Path], out: Path, cwd: Path) -> None:
    "Copy styles.css, nbs/figures (and figures the notebooks wrote in `cwd`) and referenced local images to `out`."
    shutil.copy2(NBS / "styles.css", out / "styles.css") if (NBS / "styles.css").exists() else None
    (out / "site.css").write_text(SITE_CSS)
    for d in (NBS / "figures", cwd / "figures"):
        if d.is_dir(): shutil.copytree(d, out / "figures", dirs_exist_ok=True)
    for p in nb_paths:
        for cell in nbformat.read(p, as_version=4).cells:
            if cell.cell_type != "markdown": continue
            for ref in (a or b for a, b in _IMG_REF.findall(cell.source)):
                if re.match(r"^[a-z]+:", ref) or ref.startswith("/"): continue
                src = next((b / ref for b in (NBS, cwd) if (b / ref).is_file()), None)
                if src is None: print(f"  warning: {p.name} references a missing image {ref}", file=sys.stderr); continue
                (out / ref).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out / ref)


def prune_stale(out: Path, keep: set[str]) -> None:
    "Remove pages of notebooks that no longer exist, only in an output folder this script created."
    if not (out / MARKER).exists(): return
    for f in out.glob("*.html"):
        if f.name not in keep: f.unlink()


# ---------------------------------------------------------------------------------------------- driver
def build_one(nb_path: Path, pages: list[dict], out: Path, work: Path, args, flags: set[str], site: dict) -> dict:
    """Execute (with --execute), process and render one notebook; return its timings. A notebook that fails
    to execute still gets its page (code without outputs, the error on top); then the `DocsError` is raised."""
    t0, src, slow, error = time.perf_counter(), nb_path, (0, 0.0, ""), None
    if args.execute:
        try:
            nb = execute(nb_path, PROC, args.timeout, flags)
            slow, src = slowest_cell(nb), work / "executed" / nb_path.name
            src.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, src)
        except DocsError as e: error = e
    t1 = time.perf_counter()
    dst = work / "processed" / nb_path.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    notes = nbdev_process(src, dst)
    t2 = time.perf_counter()
    page = page_name(nb_path)
    html_ = render_page(nbformat.read(dst, as_version=4), frontmatter(nb_path), pages, page, nb_path.name, site,
                        str(error or ""))
    (out / page).write_text(html_, encoding="utf-8")
    if error: raise error
    return dict(execute=t1 - t0 if args.execute else None, process=t2 - t1, render=time.perf_counter() - t2, page=page,
                slowest=slow, notes=notes)


def progress_line(i: int, n: int, nb_path: Path, t: dict) -> str:
    "One notebook's progress line: page, times, the slowest cell when it took 20 s or more, nbdev's notes."
    ex = f"{t['execute']:6.1f}s" if t["execute"] is not None else "     -"
    line = (f"[{i}/{n}] {nb_path.name:<22} -> {t['page']:<16} execute {ex}  process {t['process']:5.1f}s  "
            f"render {t['render']:4.1f}s")
    pos, secs, first = t["slowest"]
    if secs >= 20: line += f"  (slowest: cell {pos}, {secs:.0f}s: {first!r})"
    return "\n".join([line] + [f"    note: {note}" for note in t["notes"]])


def parse_args(argv=None):
    "Command-line options."
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "_docs", help="output folder (default: _docs)")
    ap.add_argument("--execute", action="store_true",
                    help="execute every notebook again instead of rendering the outputs committed in it (`make nbs`)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="build only these notebooks (e.g. index 06_graphs)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds a single cell may run (default 600)")
    ap.add_argument("--quick", action="store_true",
                    help="with --execute: set IN_TEST=1 in the kernels, as nbdev_test does, so notebooks shrink their workloads")
    ap.add_argument("--fail-fast", action="store_true", help="stop at the first notebook that fails")
    ap.add_argument("--quarto", action="store_true", help="run `nbdev_docs` (needs Quarto) instead of the offline build")
    return ap.parse_args(argv)


def run_quarto() -> int:
    "Render the Quarto site with nbdev_docs (same _quarto.yml), when Quarto is installed."
    if not shutil.which("quarto"):
        print("error: --quarto needs Quarto on PATH (https://quarto.org); without it, drop --quarto for the offline site",
              file=sys.stderr)
        return 2
    return subprocess.call([str(Path(sys.executable).parent / "nbdev_docs")], cwd=ROOT)


def main(argv=None) -> int:
    "Build the site; return the exit status (1 when a notebook failed, naming it)."
    args = parse_args(argv)
    if args.quarto: return run_quarto()
    os.environ.setdefault("HIPERF_PROGRESS", "0")
    os.environ["MPLBACKEND"] = "Agg"  # this process (nbdev's show_doc shell); kernels get inline figures
    if args.quick: os.environ["IN_TEST"] = "1"
    try:
        all_nbs = notebooks()
        selected = notebooks(only=args.only)
        pages = site_pages(all_nbs)
        site = next((dict(title=p["title"], description=p["description"]) for p in pages if p["stem"] == "index"),
                    dict(title=ROOT.name, description=""))
        sync_proc_folder()
    except DocsError as e:
        print(f"error: {e}", file=sys.stderr); return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    fresh = not any(out.iterdir())
    if fresh or (out / MARKER).exists(): (out / MARKER).write_text("built by scripts/build_docs.py\n")
    flags = tst_flags()
    mode = "executing" if args.execute else "not executing"
    print(f"docs: {len(selected)} notebook(s) -> {out} ({mode}; skipped flags: {', '.join(sorted(flags)) or 'none'}"
          f"{'; IN_TEST=1' if args.quick else ''})", flush=True)
    failed, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hiperf-docs-") as work:
        for i, p in enumerate(selected, 1):
            try:
                print(progress_line(i, len(selected), p, build_one(p, pages, out, Path(work), args, flags, site)),
                      flush=True)
            except DocsError as e:
                failed.append(p.name)
                print(f"[{i}/{len(selected)}] {p.name:<22} FAILED\n  {e}", file=sys.stderr, flush=True)
                if args.fail_fast: break
    copy_assets(selected, out, PROC)
    if not args.only: prune_stale(out, {p["page"] for p in pages})
    elif n := refresh_navigation(out, pages): print(f"docs: updated the sidebar of {n} page(s) built earlier", flush=True)
    print(f"docs: {len(selected) - len(failed)}/{len(selected)} page(s) in {time.perf_counter() - start:.1f}s; "
          f"open {out / 'index.html'}", flush=True)
    if shutil.which("quarto"):
        print("docs: Quarto is installed: `nbdev_docs` (or this script with --quarto) renders the Quarto site from "
              "_quarto.yml", flush=True)
    if failed:
        print(f"error: {len(failed)} notebook(s) failed: {', '.join(failed)} (errors above; pages of notebooks that "
              "failed to execute show their code without outputs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
