"""The docs run: every ```python block of docs/**/*.md and README.md, and the site's strict build.

Each page's blocks run in order in one fresh namespace, inside a temporary working directory, so a later
block may use what an earlier one defined, as a reader would. An HTML comment as the last line before a
block marks it:

- ``<!-- skip: needs a GPU -->``: never run here; the test skips with that reason.
- ``<!-- requires: torch, keras -->``: skipped, naming the package, when one of these modules is not
  installed (torch is required under ``RNNX_REQUIRE_TORCH=1``, as in the other oracle tests).

A skipped block must not define what a later block of its page needs.
"""

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")) + ["README.md"]
# Keras 3.15 itself calls np.array(variable) in a way NumPy 2 deprecates; not ours to fix.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]
MARK = re.compile(r"<!--\s*(skip|requires):\s*(.*?)\s*-->")


@dataclasses.dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None  # the reason, or None
    requires: tuple[str, ...]


def blocks(page: str) -> list[Block]:
    found, lines = [], (ROOT / page).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        start, indent = i, lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        code = "\n".join(line.removeprefix(indent) for line in lines[start + 1 : end])
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.fullmatch(before)
        skip = mark[2] if mark and mark[1] == "skip" else None
        requires = tuple(m.strip() for m in mark[2].split(",")) if mark and mark[1] == "requires" else ()
        found.append(Block(page, start + 1, code, skip, requires))
        i = end + 1
    return found


BLOCKS = [b for page in PAGES for b in blocks(page)]


class _Page:
    """One page's namespace and working directory, and how many of its blocks have run."""

    def __init__(self, directory: Path):
        self.namespace = {"__name__": "__docs__"}
        self.directory = directory
        self.done = 0


_pages: dict[str, _Page] = {}


def _missing(block: Block) -> str | None:
    for module in block.requires:
        if module == "torch" and os.environ.get("RNNX_REQUIRE_TORCH") == "1":
            continue  # fails below, on import, as the other torch oracle tests do in CI
        if importlib.util.find_spec(module) is None:
            return f"{block.page}:{block.line} needs {module}, which is not installed"
    return None


def _run(block: Block, page: _Page) -> None:
    cwd = os.getcwd()
    os.chdir(page.directory)
    try:
        exec(compile(block.code, f"{block.page}:{block.line}", "exec"), page.namespace)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_code_block_runs(block, tmp_path_factory):
    if block.skip:
        pytest.skip(f"{block.page}:{block.line}: {block.skip}")
    reason = _missing(block)
    if reason:
        pytest.skip(reason)
    page = _pages.setdefault(block.page, _Page(tmp_path_factory.mktemp(Path(block.page).stem)))
    own = [b for b in BLOCKS if b.page == block.page]
    # Blocks before this one that have not run (a -k selection) run first, as a reader would have run them.
    for earlier in own[page.done : own.index(block)]:
        if not earlier.skip and not _missing(earlier):
            _run(earlier, page)
    page.done = own.index(block) + 1
    _run(block, page)


def test_every_page_has_a_title_and_the_readme_has_the_test_command():
    for page in PAGES:
        assert (ROOT / page).read_text(encoding="utf-8").startswith("# "), page
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"<!-- test-command -->\n```bash\n.*python -m pytest\n```", readme)


def _anchors(page: Path) -> set[str]:
    """The heading ids mkdocs gives ``page`` (Python-Markdown's toc slugify)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    titles = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    slug = lambda title: re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", title).strip().lower())  # noqa: E731
    return {slug(t) for t in titles}


def test_the_readmes_links_resolve():
    """The README is not part of the site, so the strict build does not check its links: this does."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", readme):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(ROOT / target), f"README.md links to {target}#{anchor}, which has no such heading"


def test_the_site_builds_strictly(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"the docs build needs {module}, which is not installed: pip install -e '.[docs]'")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    site = tmp_path / "site"
    assert (site / "api" / "rnnx" / "index.html").exists()
    folders = ("benchmarks/results", "examples/results")
    plots = [p.relative_to(ROOT) for folder in folders for p in (ROOT / folder).glob("*.png")]
    assert plots and all((site / p).exists() for p in plots), "docs/hooks.py serves the committed plots"
