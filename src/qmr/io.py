"""Atomic, resumable file I/O for JSON and JSON Lines.

Every output is written to a temporary file in the same directory and renamed into place, so a crash
never leaves a half-written file that looks complete. Append-only caches (`JsonlAppender`) flush and
fsync each record, and `read_jsonl(..., tolerate_partial_tail=True)` drops a torn last line.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from qmr.errors import UserError


class DataFileError(UserError, ValueError):
    """A data file is missing or malformed; the message names the file, the line and the problem."""


def _atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    _atomic_write_text(Path(path), text)


def write_csv(path: str | Path, rows: list[dict], fieldnames: list[str] | None = None) -> None:
    """``rows`` as CSV with a header row: ``fieldnames``, or the first row's keys (no rows and no
    fieldnames: an empty file). ``None`` becomes an empty cell."""
    import csv
    import io

    fieldnames = list(fieldnames or (rows[0] if rows else []))
    buf = io.StringIO()
    if fieldnames:
        writer = csv.DictWriter(buf, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    _atomic_write_text(Path(path), buf.getvalue())


def write_json(path: str | Path, obj: Any) -> None:
    _atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_text_file(path: Path) -> str:
    """The file's text, or a DataFileError naming it: missing, a directory, unreadable, not UTF-8."""
    if not path.exists():
        raise DataFileError(f"{path}: file not found")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file (a directory?); allowed: a UTF-8 JSON file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); allowed: UTF-8 JSON") from None
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    text = read_text_file(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise DataFileError(f"{path}: JSON nested too deeply") from None


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    _atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def iter_jsonl(path: str | Path, tolerate_partial_tail: bool = False) -> Iterator[dict]:
    path = Path(path)
    parts = read_text_file(path).split("\n")  # not splitlines(): U+2028 and friends may sit inside JSON strings
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except RecursionError:
            raise DataFileError(f"{path}:{lineno}: JSON nested too deeply") from None
        except json.JSONDecodeError as exc:
            if tolerate_partial_tail and lineno == len(lines) and not line.endswith("\n"):
                return  # torn write at the tail of an append-only cache: drop it
            raise DataFileError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise DataFileError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        yield rec


def read_jsonl(path: str | Path, tolerate_partial_tail: bool = False) -> list[dict]:
    return list(iter_jsonl(path, tolerate_partial_tail=tolerate_partial_tail))


class JsonlAppender:
    """Append-only JSON Lines cache: one fsync'd line per finished unit of work.

    Used by long stages (generate, judge, silver) so that a killed run resumes from what it finished.
    A torn last line (the process died mid-write) is truncated away on open.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._fh = self.path.open("a", encoding="utf-8")

    def _repair_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as fh:
                fh.truncate(keep)

    def existing(self) -> list[dict]:
        if not self.path.exists():
            return []
        return read_jsonl(self.path, tolerate_partial_tail=True)

    def append(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
