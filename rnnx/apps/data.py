"""Text data through Hugging Face ``datasets``: load, tokenise, build vocabularies, pad and batch.

``datasets`` comes with the ``data`` extra (``pip install "rnnx[data]"``), not with ``pip install rnnx``: only
:func:`load` and the corpora that return a ``Dataset`` need it, and without it they raise :class:`MissingExtra`,
one line naming the extra.

Batches are dicts of NumPy arrays: ``tokens (b, l) int32``, ``lengths (b,) int32``, ``labels (b,)`` and
``weights (b,) float32`` (0 for rows that only pad a short final batch). ``l`` is rounded up to one of a
few bucket lengths, so a jitted step compiles once per bucket rather than once per batch.
"""

import collections
import importlib
import json
import os
import re
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    import datasets

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


class DataUnavailable(RuntimeError):
    """A dataset could not be loaded; the message says why and what to do instead."""


class MissingExtra(DataUnavailable, ImportError):
    """An optional dependency is not installed; the message names the ``pip install "rnnx[...]"`` that brings it."""


def require_datasets(what: str) -> types.ModuleType:
    """The ``datasets`` module, or :class:`MissingExtra` saying that ``what`` needs the ``data`` extra.

    Imported on first use rather than at the top of this module, because ``datasets`` is optional: the plain
    install, ``rnnx train`` on the shipped Shakespeare text and everything outside this layer run without it.
    """
    try:
        return importlib.import_module("datasets")
    except ImportError:
        message = f'{what} needs Hugging Face datasets, which is not installed: pip install "rnnx[data]"'
        raise MissingExtra(message) from None


def tokenize(text: str, level: str = "word") -> list[str]:
    """Lower-cased words and punctuation marks (``level="word"``) or characters (``"char"``).

    >>> tokenize("It's a Fine day!")
    ["it's", 'a', 'fine', 'day', '!']
    """
    if level == "char":
        return list(text)
    if level == "word":
        return _WORD.findall(text.lower())
    raise ValueError(f"level must be 'word' or 'char', received {level!r}")


class Vocab:
    """A token <-> id map with ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3.

    >>> v = Vocab.build(["a b b", "b c"], min_freq=2)
    >>> v.tokens, v.encode("b a d")
    (['<pad>', '<unk>', '<bos>', '<eos>', 'b'], [4, 1, 1])
    """

    def __init__(self, tokens: Sequence[str], level: str = "word") -> None:
        if list(tokens[: len(SPECIALS)]) != list(SPECIALS):
            raise ValueError(f"tokens must start with {list(SPECIALS)}, received {list(tokens[:4])}")
        self.tokens, self.level = list(tokens), level
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(
        cls, texts: Iterable[str], *, level: str = "word", min_freq: int = 1, max_size: int | None = None
    ) -> "Vocab":
        """Count tokens in ``texts`` (the training split only) and keep the most frequent.

        Ties break alphabetically, so the vocabulary does not depend on the order of ``texts``.
        """
        counts = collections.Counter(t for text in texts for t in tokenize(text, level))
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls(list(SPECIALS) + kept[: None if max_size is None else max_size - len(SPECIALS)], level)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        unk = self.index[UNK]
        ids = [self.index.get(t, unk) for t in tokenize(text, self.level)]
        return [self.index[BOS]] * bos + ids + [self.index[EOS]] * eos

    def decode(self, ids: Iterable[int]) -> str:
        sep = "" if self.level == "char" else " "
        return sep.join(self.tokens[i] for i in ids if i >= len(SPECIALS) or self.tokens[i] == UNK)

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps({"level": self.level, "tokens": self.tokens}))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Vocab":
        data = json.loads(Path(path).read_text())
        return cls(data["tokens"], data["level"])


def local_files(source: str) -> list[Path] | None:
    """The paths in ``source`` when it names local files (comma-separated, known suffixes), else None."""
    paths = [Path(p) for p in source.split(",")]
    return paths if all(p.suffix in _FORMATS for p in paths) else None


def check_files(paths: Sequence[Path]) -> None:
    """Raise :class:`DataUnavailable` for a path that is missing, not a file, empty, or not UTF-8 text
    (parquet is binary by design and only checked for existence); the message names ``--dataset``."""
    for path in paths:
        if not path.exists():
            raise DataUnavailable(f"--dataset file not found: {path}")
        if not path.is_file():
            raise DataUnavailable(f"--dataset must be a file, received the directory {path}")
        if path.stat().st_size == 0:
            raise DataUnavailable(f"--dataset file is empty: {path}")
        if _FORMATS[path.suffix] == "parquet":
            continue
        with path.open("rb") as f:
            head = f.read(1 << 16)
        if b"\0" in head or not _is_utf8(head, cut=len(head) == 1 << 16):
            raise DataUnavailable(f"--dataset file is binary, not UTF-8 text: {path}")


def _is_utf8(head: bytes, *, cut: bool) -> bool:
    """Whether ``head`` decodes; when it was ``cut`` from a longer file, a character split at its end is not
    a fault (up to 3 bytes of one are dropped)."""
    for drop in range(4 if cut else 1):
        try:
            head[: len(head) - drop].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


@overload
def load(source: str, *, split: str, **kwargs: Any) -> "datasets.Dataset": ...
@overload
def load(source: str, *, split: None = None, **kwargs: Any) -> "datasets.DatasetDict": ...
def load(source: str, *, split: str | None = None, **kwargs: Any) -> "datasets.Dataset | datasets.DatasetDict":
    """A ``datasets.DatasetDict`` (or ``Dataset`` with ``split``) from a Hub name or local files.

    ``source`` is a Hub dataset name such as ``"stanfordnlp/imdb"``, or a local csv/tsv/json/jsonl/parquet/
    txt file (or a comma-separated list of them). Offline, a Hub name raises :class:`DataUnavailable`
    saying so and showing how to pass local files instead.
    """
    datasets = require_datasets(f"loading {source!r}")
    paths = local_files(source)
    if paths is not None:
        check_files(paths)
        formats = {_FORMATS[p.suffix] for p in paths}
        if len(formats) > 1:
            raise DataUnavailable(f"local files must share one format, received {sorted(formats)}")
        extra = {"delimiter": "\t"} if paths[0].suffix == ".tsv" else {}
        return datasets.load_dataset(formats.pop(), data_files=[str(p) for p in paths], split=split, **extra, **kwargs)
    try:
        return datasets.load_dataset(source, split=split, **kwargs)
    except (ConnectionError, OSError) as error:  # offline: ConnectionError, or OfflineModeIsEnabled (an OSError)
        raise DataUnavailable(
            f"could not load {source!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
            "The Hub needs network access. Pass local files instead, e.g. --dataset train.csv "
            "(csv/tsv/json/jsonl/parquet/txt, with a text column and a label column)."
        ) from None


def encode(
    dataset: "datasets.Dataset",
    vocab: Vocab,
    *,
    text_column: str = "text",
    max_length: int | None = None,
    num_proc: int | None = None,
) -> "datasets.Dataset":
    """Add ``ids`` and ``length`` columns with a batched ``Dataset.map``, truncating to ``max_length``."""

    def batch(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        ids = [vocab.encode(t)[:max_length] for t in rows[text_column]]
        return {"ids": ids, "length": [len(i) for i in ids]}

    return dataset.map(batch, batched=True, num_proc=num_proc, desc="tokenising")


def _bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= ``length`` (the largest bucket if none is)."""
    for b in sorted(buckets):
        if length <= b:
            return b
    return max(buckets)


def padded_batches(
    ids: Sequence[Sequence[int]],
    labels: np.ndarray,
    *,
    batch_size: int,
    buckets: Sequence[int] = (16, 32, 64, 128),
    seed: int | None = None,
    epoch: int = 0,
    drop_last: bool = False,
    sort_within: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Pad token-id lists into fixed-size batches.

    Args:
      ids: a sequence of token-id lists; ``labels``: one label per row.
      batch_size: rows per batch; a short final batch is filled with zero-weight rows unless ``drop_last``.
      buckets: the lengths a batch may be padded to; longer rows are truncated to the largest.
      seed, epoch: shuffle with ``numpy.random.default_rng((seed, epoch))``; ``seed=None`` keeps the order.
      sort_within: group rows of similar length within windows of this many batches, to cut padding.

    Returns:
      A list of batch dicts (see the module docstring).
    """
    order = np.arange(len(ids)) if seed is None else np.random.default_rng((seed, epoch)).permutation(len(ids))
    if sort_within:
        window = batch_size * sort_within
        order = np.concatenate(
            [sorted(order[i : i + window], key=lambda k: len(ids[k])) for i in range(0, len(order), window)]
        ).astype(int)
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        if len(rows) < batch_size and drop_last:
            break
        longest = max(1, max(len(ids[k]) for k in rows))
        width = _bucket_length(longest, buckets)
        tokens = np.zeros((batch_size, width), np.int32)
        lengths = np.zeros(batch_size, np.int32)
        out_labels = np.zeros(batch_size, np.asarray(labels[rows[0]]).dtype)
        weights = np.zeros(batch_size, np.float32)
        for r, k in enumerate(rows):
            row = ids[k][:width]
            tokens[r, : len(row)], lengths[r], out_labels[r], weights[r] = row, len(row), labels[k], 1.0
        batches.append({"tokens": tokens, "lengths": lengths, "labels": out_labels, "weights": weights})
    return batches


def stream_windows(ids: np.ndarray, *, batch_size: int, window: int) -> np.ndarray:
    """Cut one token stream into ``batch_size`` contiguous lanes and windows of ``window + 1`` tokens.

    Window ``k`` of lane ``r`` continues exactly where window ``k - 1`` of lane ``r`` stopped (sharing one
    token: the last target of a window is the first input of the next), so a language model can carry its
    state from window to window: truncated backpropagation through time.

    Returns:
      ``(num_windows, batch_size, window + 1)`` int32: inputs ``w[..., :-1]``, targets ``w[..., 1:]``.

    >>> stream_windows(np.arange(13), batch_size=2, window=2)[:, 0].tolist()
    [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    """
    ids = np.asarray(ids, np.int32)
    lane = (len(ids) - 1) // batch_size
    num_windows = lane // window
    if num_windows < 1:
        raise ValueError(
            f"a stream of {len(ids)} tokens is too short for batch_size={batch_size} and window={window}; "
            f"expected at least {batch_size * window + 1} tokens"
        )
    lanes = np.stack([ids[r * lane : r * lane + num_windows * window + 1] for r in range(batch_size)])
    starts = np.arange(num_windows) * window
    return np.stack([lanes[:, s : s + window + 1] for s in starts])


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIALS",
    "UNK",
    "DataUnavailable",
    "MissingExtra",
    "Vocab",
    "check_files",
    "encode",
    "load",
    "local_files",
    "padded_batches",
    "require_datasets",
    "stream_windows",
    "tokenize",
]
