"""Build-time helpers for the docs site (mkdocs.yml names this file twice).

- An mkdocs hook: the plots committed under ``benchmarks/results/`` and ``examples/results/`` are served at the
  same paths in the site, so a page writes ``![..](benchmarks/results/x.png)`` as the README does, and the
  figures are never copied (a copy would go stale when a benchmark reruns).
- A griffe extension for the docstrings, which are written for ``pytest --doctest-modules`` and Sphinx-style
  roles: each ``:func:`rnnx.unroll``` becomes a cross-reference that mkdocstrings resolves (a broken one fails
  the strict build), or plain code for builtins (``ValueError``); each ``>>>`` example becomes a ``pycon``
  code block instead of a paragraph.
"""

import builtins
import re
from pathlib import Path

import griffe
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ("benchmarks/results", "examples/results")


def on_files(files, config):
    for folder in PLOTS:
        for path in sorted((ROOT / folder).glob("*.png")):
            files.append(File.generated(config, f"{folder}/{path.name}", abs_src_path=str(path)))
    return files


ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):`~?([\w.]+)`")


def _link(match: re.Match) -> str:
    name = match[1]
    if hasattr(builtins, name):
        return f"`{name}`"
    return f"[`{name}`][{name}]"


def _fence_doctests(text: str) -> str:
    """Wrap each run of ``>>>`` lines and their output (up to a blank line) in a ``pycon`` fence."""
    out, inside = [], False
    for line in text.splitlines():
        starts = line.lstrip().startswith(">>>")
        if starts and not inside:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not line.strip():
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """``:role:`name``` -> ``[`name`][name]``, resolved by mkdocstrings (relative names in the object's scope);
    doctests -> ``pycon`` blocks."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _fence_doctests(ROLE.sub(_link, obj.docstring.value))
