"""The documentation site (mkdocs.yml, docs/): its code examples run, it builds with
warnings as errors, the generated reference covers today's API, no internal link is
broken, and the key pages render in headless Chromium.

The ```python blocks of the start page, getting started and the guides run as the
tests (one process per page, the blocks in order, sharing their names). A block whose
first line is ``# docs-test: skip (reason)`` is not run; ``# docs-test: needs MODULE ...``
runs only where every MODULE can be imported. A block whose first line is
``// docs-test: file NAME`` (C) or ``# docs-test: file NAME`` (Python) is saved as NAME
where the examples run (a C program they build, a script they start under mpirun).

Set MLC_DOCS_SCREENSHOTS=DIR to keep the screenshots Chromium takes.
"""
from __future__ import annotations

import functools
import html.parser
import http.server
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse

import pytest

import mlc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
CHROMIUM = "/usr/bin/chromium"

# pages whose code blocks are executable examples (the topic pages hold fragments)
EXAMPLE_PAGES = ["index.md", "getting_started.md"] + sorted(
    os.path.join("guides", f) for f in os.listdir(os.path.join(DOCS, "guides")) if f.endswith(".md"))
MARKER = re.compile(r"#\s*docs-test:\s*(skip|needs)\b\s*(.*)")
FILE_MARKER = re.compile(r"(?:#|//)\s*docs-test:\s*file\s+(\S+)")


def code_blocks(page: str, lang: str = "python") -> list[tuple[int, str]]:
    """(line number, source) of each ```python (or other ``lang``) block of a page."""
    blocks, current, start = [], None, 0
    for i, line in enumerate(open(os.path.join(DOCS, page)).read().splitlines(), 1):
        if current is None and re.match(rf"^```{lang}\s*$", line):
            current, start = [], i + 1
        elif current is not None and line.startswith("```"):
            blocks.append((start, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{page}: a ```python block is not closed"
    return blocks


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:   # a parent package is missing
        return False


def runnable(page: str) -> tuple[str, list[str]]:
    """The page's program (its runnable blocks in order, each at its own line numbers) and
    why the others are left out."""
    lines, skipped = [], []
    for start, src in code_blocks(page):
        first = src.splitlines()[0] if src else ""
        if FILE_MARKER.match(first.strip()):
            continue   # a file the examples use (page_files)
        m = MARKER.match(first.strip())
        if m and m.group(1) == "skip":
            skipped.append(f"line {start}: {m.group(2)}")
            continue
        if m and m.group(1) == "needs" and not all(_importable(x) for x in m.group(2).split()):
            skipped.append(f"line {start}: needs {m.group(2)}")
            continue
        lines += [""] * (start - 1 - len(lines)) + src.splitlines()
    return "\n".join(lines), skipped


def page_files(page: str) -> dict[str, str]:
    """The page's files for its examples: a ```c or ```python block whose first line is
    ``// docs-test: file NAME`` (``# docs-test: file NAME``) is written as NAME where the
    examples run."""
    files = {}
    for lang in ("c", "python"):
        for _, src in code_blocks(page, lang):
            m = FILE_MARKER.match(src.strip())
            if m:
                files[m.group(1)] = src
    return files


def test_example_markers_are_few():
    """Blocks left out of the checks stay the exception: one needs a GPU (blocks that need an
    optional package run where it is installed)."""
    skipped = [s for p in EXAMPLE_PAGES for s in runnable(p)[1] if "needs" not in s]
    assert len(skipped) <= 2, skipped
    assert all(code_blocks(p) for p in EXAMPLE_PAGES), "every guide shows code"


def test_extractor_keeps_line_numbers_and_honours_markers(tmp_path, monkeypatch):
    page = tmp_path / "p.md"
    page.write_text("text\n```python\nx = 1\n```\n\n```python\n# docs-test: skip (needs a GPU)\nboom()\n```\n"
                    "```python\n# docs-test: needs no_such_module_xyz\nboom()\n```\n```python\ny = x + 1\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "DOCS", str(tmp_path))
    src, skipped = runnable("p.md")
    assert src.splitlines()[2] == "x = 1" and "y = x + 1" in src and "boom" not in src
    assert skipped == ["line 7: (needs a GPU)", "line 11: needs no_such_module_xyz"]


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_page_examples_run(page, tmp_path):
    src, _ = runnable(page)
    assert src.strip(), f"{page} has no runnable example"
    script = tmp_path / (page.replace("/", "_") + ".py")
    script.write_text(src)
    for name, text in page_files(page).items():
        (tmp_path / name).write_text(text)
    env = dict(os.environ, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env=env)
    # the traceback names docs/<page> lines: the script keeps each block at its page's line numbers
    assert r.returncode == 0, f"docs/{page}:\n{r.stderr[-3000:]}"


def test_op_functions_have_real_signatures():
    sig = inspect.signature(mlc.conv)
    assert list(sig.parameters)[:3] == ["x", "w", "strides"]
    assert sig.parameters["group"].default == 1
    assert "ONNX Conv" in mlc.conv.__doc__


# ----------------------------------------------------------------------------- the built site

def _have_mkdocs() -> str | None:
    for mod, why in (("mkdocs", "mkdocs"), ("material", "mkdocs-material"),
                     ("mkdocstrings_handlers.python", "mkdocstrings[python]")):
        if not _importable(mod):
            return f"the site needs {why}: pip install -e '.[docs]'"
    return None


@pytest.fixture(scope="module", autouse=True)
def _site_build():
    """Starts building the site when the module's first test starts, so the build runs
    beside the examples; ``site`` waits for it."""
    if _have_mkdocs():
        yield None
        return
    out = tempfile.mkdtemp(prefix="mlc_site_")
    log = open(os.path.join(out, "..", os.path.basename(out) + ".log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", out], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, NO_MKDOCS_2_WARNING="1", MPLBACKEND="Agg"))
    yield proc, out, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()
    os.unlink(log.name)
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def site(_site_build):
    why = _have_mkdocs()
    if why:
        pytest.skip(why)
    proc, out, log = _site_build
    proc.wait(timeout=300)
    log.seek(0)
    text = log.read()
    assert proc.returncode == 0, text[-4000:]
    assert "WARNING" not in text, text[-4000:]
    return out


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links, self.text = set(), [], []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if a.get("name") and tag == "a":
            self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and tag in ("a", "img", "link", "script"):
                self.links.append(a[key])
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


@functools.lru_cache(maxsize=None)
def parse(path: str) -> Page:
    p = Page()
    p.feed(open(path, encoding="utf-8").read())
    return p


def html_files(site):
    for d, _, fs in os.walk(site):
        for f in fs:
            if f.endswith(".html"):
                yield os.path.join(d, f)


def test_no_broken_internal_links(site):
    broken, checked = [], 0
    for path in html_files(site):
        for link in parse(path).links:
            u = urllib.parse.urlsplit(link)
            if u.scheme or u.netloc or link.startswith(("mailto:", "data:", "javascript:")):
                continue
            base = site if u.path.startswith("/") else os.path.dirname(path)   # 404.html links from the root
            target = path if not u.path else os.path.normpath(os.path.join(base, urllib.parse.unquote(
                u.path.lstrip("/"))))
            if os.path.isdir(target):
                target = os.path.join(target, "index.html")
            checked += 1
            if not os.path.exists(target):
                broken.append(f"{os.path.relpath(path, site)}: {link}")
            elif u.fragment and target.endswith(".html") and urllib.parse.unquote(u.fragment) not in parse(target).ids:
                broken.append(f"{os.path.relpath(path, site)}: {link} (no such anchor)")
    assert checked > 500
    assert not broken, "\n".join(broken[:40])


def page_text(site, rel) -> str:
    return "".join(parse(os.path.join(site, rel, "index.html")).text)


def test_site_has_the_pages(site):
    for rel in ["", "getting_started", "guides/tracing", "guides/onnx", "guides/training", "guides/tuning",
                "guides/deploy", "guides/distributed", "deploy", "distributed", "guides/gpu", "guides/interop",
                "guides/profiling", "design", "reference/ops", "reference/ir", "reference/cli", "reference/c_api",
                "tutorials"]:
        assert os.path.exists(os.path.join(site, rel, "index.html")), rel
    for page in ("serving", "mlir", "relax"):   # other work's pages: in the site when they exist
        if os.path.exists(os.path.join(DOCS, f"{page}.md")):
            assert os.path.exists(os.path.join(site, page, "index.html")), page
    for f in os.listdir(os.path.join(ROOT, "tutorials")):
        if f.endswith(".py") and f[0].isdigit():
            assert f"tutorials/{f}" in page_text(site, f"tutorials/{f[:-3]}"), f
    if _importable("matplotlib"):   # the first tutorial's roofline, drawn at build
        assert os.path.getsize(os.path.join(site, "tutorials", "images", "01_trace_and_jit", "roofline.png")) > 10_000


def test_api_reference_has_every_public_name(site):
    import importlib
    sys.path.insert(0, DOCS)
    try:
        gen = importlib.import_module("gen_ref")
    finally:
        sys.path.remove(DOCS)
    missing = []
    for mod in gen.API_MODULES:
        ids = parse(os.path.join(site, "reference", "api", mod.split(".")[-1], "index.html")).ids
        names = gen.public_names(mod) if mod != "mlc.interop" else []
        missing += [f"{mod}.{n}" for n in names if f"{mod}.{n}" not in ids]
        if mod == "mlc.interop":
            missing += [m for m in gen.interop_modules() if m not in ids]
    assert not missing, missing
    text = page_text(site, "reference/api/mlc")
    assert "mlc.conv(x, w, strides=None" in text     # an op with its signature
    assert "Compile" in text or "compile" in text


def test_op_table_covers_the_registry(site):
    from mlc import ops
    p = parse(os.path.join(site, "reference", "ops", "index.html"))
    assert {f"op-{n}" for n in ops.REGISTRY} <= p.ids
    text = "".join(p.text)
    assert "numpy.add" in text and "Conv, ConvInteger" in text   # a numpy reference; ONNX ops onto conv


def test_cli_and_c_api_pages_are_complete(site):
    cli = page_text(site, "reference/cli")
    for cmd in ("ir", "demo", "run", "compile", "tune", "rpc-server", "serve", "inspect", "sign"):
        assert f"mlc {cmd}" in cli, cmd
    assert "--disable-pass" in cli and "--max-batch" in cli
    header = open(os.path.join(ROOT, "mlc", "runtime", "c", "mlc_model.h")).read()
    functions = re.findall(r"^MLC_API[^;(]*?(\w+)\s*\(", header, re.M)
    c_ids = parse(os.path.join(site, "reference", "c_api", "index.html")).ids
    assert len(functions) >= 10
    assert [f for f in functions if f not in c_ids] == []


def test_ir_reference_shows_each_level_and_every_pass(site):
    from mlc.passes.manager import ALL_PASSES
    text = page_text(site, "reference/ir")
    for s in ("graph @mlp(", "kernel @", "func @", "parallel", "vector", "body=graph", "dense<"):
        assert s in text, s
    for name in ALL_PASSES:
        assert name in text, name
    assert "may import" in text   # the layer table of docs/design.md


# ----------------------------------------------------------------------------- headless Chromium

@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=site)
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


PAGES = [   # (name, path, texts the rendered DOM must hold)
    ("start", "/", ["mlc", "Getting started", "Guides"]),
    ("guide", "/guides/tracing/", ["Tracing and jit", "mlc.trace", "value_and_grad"]),
    ("api_jit", "/reference/api/mlc/", ['id="mlc.jit"', "mlc.jit", "Contents"]),
    ("op_table", "/reference/ops/", ["Op reference", "conv(x, w", "numpy.add", "gradient"]),
]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no headless browser: {CHROMIUM} is missing "
                    "(apt-get install chromium; .ci/run installs it when it runs as root)")
@pytest.mark.parametrize("name,path,texts", PAGES, ids=[p[0] for p in PAGES])
def test_pages_render_in_chromium(server, name, path, texts, tmp_path):
    shots = os.environ.get("MLC_DOCS_SCREENSHOTS") or str(tmp_path)
    os.makedirs(shots, exist_ok=True)
    png = os.path.join(shots, f"{name}.png")
    profile = tmp_path / "profile"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={profile}", "--window-size=1280,900", f"--screenshot={png}",
                        "--dump-dom", server + path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert "</html>" in dom
    for t in texts:
        assert t in dom, (path, t)
    assert 'data-md-color-primary' in dom   # the Material theme's page, not an error page
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000   # a rendered page, not a blank one
