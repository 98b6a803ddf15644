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
import socket
import types
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from rnnx.apps.data_files import FORMATS
from rnnx.apps.data_files import DataUnavailable as DataUnavailable
from rnnx.apps.data_files import check_files as check_files
from rnnx.apps.data_files import is_text as is_text
from rnnx.apps.data_files import local_files as local_files
from rnnx.apps.data_files import read_text as read_text

if TYPE_CHECKING:
    import datasets

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
_OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_LOCAL_HINT = (
    "The Hub needs network access. Pass local files instead, e.g. --dataset train.csv "
    "(csv/tsv/json/jsonl/parquet/txt, with a text column and a label column)."
)


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


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face Hub can be asked at all: not offline by ``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE``, and its host answers a TCP connection within ``timeout_s`` (so that an offline
    machine fails at once instead of retrying for half a minute)."""
    if any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in _OFFLINE):
        return False
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def cache_note(paths: Sequence[Path]) -> str:
    """Where Hugging Face ``datasets`` keeps its converted copy of local ``paths``: said, not done silently."""
    cache = require_datasets("reading local files").config.HF_DATASETS_CACHE
    return f"Hugging Face datasets keeps a converted copy of {', '.join(map(str, paths))} in {cache}"


@overload
def load(source: str, *, split: str, **kwargs: Any) -> "datasets.Dataset": ...
@overload
def load(source: str, *, split: None = None, **kwargs: Any) -> "datasets.DatasetDict": ...
def load(source: str, *, split: str | None = None, **kwargs: Any) -> "datasets.Dataset | datasets.DatasetDict":
    """A ``datasets.DatasetDict`` (or ``Dataset`` with ``split``) from a Hub name or local files.

    ``source`` is a local csv/tsv/json/jsonl/parquet/txt file (any existing path, whatever its name; without a
    known suffix, text), a comma-separated list of them, or else a Hub dataset name such as
    ``"stanfordnlp/imdb"``. A Hub name that cannot be loaded (offline: at once, without retries) raises
    :class:`DataUnavailable` saying so and showing how to pass local files instead. ``datasets`` keeps a
    converted copy of local files in its cache (:func:`cache_note` says where).
    """
    datasets = require_datasets(f"loading {source!r}")
    paths = local_files(source)
    if paths is not None:
        check_files(paths)
        formats = {FORMATS.get(p.suffix, "text") for p in paths}
        if len(formats) > 1:
            raise DataUnavailable(f"local files must share one format, received {sorted(formats)}")
        extra = {"delimiter": "\t"} if paths[0].suffix == ".tsv" else {}
        return datasets.load_dataset(formats.pop(), data_files=[str(p) for p in paths], split=split, **extra, **kwargs)
    not_here = f"there is no file {source!r} here either"
    if not hub_reachable():
        raise DataUnavailable(
            f"could not load {source!r} from the Hugging Face Hub: it cannot be reached (offline, or "
            f"HF_HUB_OFFLINE is set), and {not_here}. {_LOCAL_HINT}"
        )
    try:
        return datasets.load_dataset(source, split=split, **kwargs)
    except (ConnectionError, OSError, ValueError) as error:  # offline, not on the Hub, or not a valid Hub name
        raise DataUnavailable(
            f"could not load {source!r} from the Hugging Face Hub ({type(error).__name__}: {error}), and "
            f"{not_here}. {_LOCAL_HINT}"
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
    "cache_note",
    "check_files",
    "encode",
    "hub_reachable",
    "is_text",
    "load",
    "local_files",
    "padded_batches",
    "read_text",
    "require_datasets",
    "stream_windows",
    "tokenize",
]
