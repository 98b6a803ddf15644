"""Local data files: which ``--dataset`` values name files (any existing path, whatever its name), their
checks (present, a file, not empty, within a size limit, UTF-8 through to the end) and reading a text file
in bounded blocks, so that a bad byte anywhere is named with its offset and line, not met by a loader later.
"""

import codecs
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


class DataUnavailable(RuntimeError):
    """A dataset could not be loaded; the message says why and what to do instead."""


def local_files(source: str) -> list[Path] | None:
    """The paths ``source`` names when it names local files, else None (a Hub name).

    An existing path is a local file whatever its name (commas, any suffix or none); otherwise ``source`` is a
    comma-separated list of paths, each existing or with a known suffix (so that a missing file is reported as
    missing, not looked up on the Hub).
    """
    if os.path.lexists(source):
        return [Path(source)]
    paths = [Path(p) for p in source.split(",")]
    return paths if all(p.exists() or p.suffix in FORMATS for p in paths) else None


def is_text(paths: Sequence[Path]) -> bool:
    """Whether ``paths`` are plain text files (``.txt`` or a suffix of no other known format)."""
    return all(FORMATS.get(p.suffix, "text") == "text" for p in paths)


def check_files(paths: Sequence[Path], *, max_bytes: int | None = None) -> None:
    """Raise :class:`DataUnavailable` for a path that is missing, not a file, empty, together larger than
    ``max_bytes`` (None: no limit), or not UTF-8 text: the whole file is decoded, in bounded memory, and
    the first invalid byte is named with its offset and line. Parquet is binary by design and only checked
    for existence. The message names ``--dataset``."""
    for path in paths:
        if not path.exists():
            raise DataUnavailable(f"--dataset file not found: {path}")
        if not path.is_file():
            raise DataUnavailable(f"--dataset must be a file, received the directory {path}")
        if path.stat().st_size == 0:
            raise DataUnavailable(f"--dataset file is empty: {path}")
    size = sum(path.stat().st_size for path in paths)
    if max_bytes is not None and size > max_bytes:
        raise DataUnavailable(
            f"--dataset {','.join(map(str, paths))} holds {size / 2**20:,.1f} MiB, more than --max-dataset-mb "
            f"{max_bytes // 2**20}: a language model holds its whole text in memory, several times over (as "
            f"characters and as ids). Pass --max-dataset-mb {math.ceil(size / 2**20)} to read it anyway"
        )
    for path in paths:
        if FORMATS.get(path.suffix) != "parquet":
            for _ in _decoded(path):
                pass


def read_text(paths: Sequence[Path]) -> str:
    """The text of ``paths`` (checked by :func:`check_files`), one after the other with a newline between,
    each without its final newline, with ``\\r\\n`` and ``\\r`` read as ``\\n``; decoded as it is read."""
    texts = ("".join(_decoded(path)).replace("\r\n", "\n").replace("\r", "\n") for path in paths)
    return "\n".join(text.removesuffix("\n") for text in texts)


def _decoded(path: Path, block: int = 1 << 20) -> Iterator[str]:
    """The text of ``path``, decoded block by block as UTF-8, or :class:`DataUnavailable` naming the first
    invalid byte, its offset and its line."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, newlines = 0, 0  # bytes read so far, and the newlines among them
    with path.open("rb") as f:
        while True:
            data = f.read(block)
            if offset == 0 and b"\0" in data[: 1 << 16]:
                raise DataUnavailable(f"--dataset file is binary, not UTF-8 text: {path}")
            pending = decoder.getstate()[0]  # the start of a character cut at the end of the last block
            try:
                yield decoder.decode(data, final=not data)
            except UnicodeDecodeError as error:
                where = offset - len(pending) + error.start
                line = newlines + 1 + (pending + data)[: error.start].count(b"\n")
                bad = (pending + data)[error.start]
                raise DataUnavailable(
                    f"--dataset file is not UTF-8 text: {path} has the invalid byte 0x{bad:02x} at byte offset "
                    f"{where} (line {line})"
                ) from None
            if not data:
                return
            offset, newlines = offset + len(data), newlines + data.count(b"\n")


__all__ = ["FORMATS", "DataUnavailable", "check_files", "is_text", "local_files", "read_text"]
