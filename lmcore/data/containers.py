"""Corpus containers -> rows: the bottom of the data layer (`containers` -> `corpus` -> `data`). Imports only the
standard library, pyarrow and `datasets`; no lmcore module. Text files (plain or gzip: decoded line by line with a
BOM dropped, CRLF and lone CR as line ends, invalid bytes replaced and counted or an error with the byte offset, a
line over MAX_SEGMENT characters cut at whitespace), JSON Lines, CSV / TSV, Parquet, Arrow, folders written by
`Dataset.save_to_disk` / `DatasetDict.save_to_disk`, and dataset names in the local `datasets` cache. `batched` is
the data layer's one batching helper. Text files are read by `textfiles` (which also holds `CorpusError` and
`CorpusStats`); `lmcore.data.corpus` gives those names under its own name too.

Every container is read as a stream of rows, one text column at a time, with memory bounded by one batch:
Parquet through `pyarrow.parquet.ParquetFile.iter_batches` (buffered reads of the one column), Arrow files and
datasets (saved or cached) through Arrow IPC readers batch by batch, JSON Lines and CSV line by line through the
same decoder as text files (gzip, BOM, encodings, invalid bytes replaced and counted or an error). `datasets`
resolves saved folders (`load_from_disk`) and cached names (its offline cache lookup); it never downloads.

`check(source, reading)` finds what is wrong with a source before anything is tokenized: a missing column (listing
the columns there are), a column that does not hold text, a corrupt Parquet or Arrow file, a JSON line that does
not parse (with its line number), an unknown split or configuration. JSON Lines are parsed in full for this;
the columnar containers only have their metadata and batch headers read.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from .textfiles import (  # noqa: F401  the text readers' names, given here too (corpus takes them from here)
    MAX_SEGMENT, READ_CHUNK, CorpusError, CorpusStats, decoded_lines, iter_lines, open_binary, segments)

log = logging.getLogger(__name__)


ROWS_PER_BATCH = 1000
"""Rows converted to Python strings at a time (a larger Arrow batch is sliced)."""
PARQUET_BUFFER = 1 << 20
"""Bytes per buffered read of a Parquet column chunk: a row group is never read into memory whole."""
KIND_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "tsv",
                  ".parquet": "parquet", ".arrow": "arrow"}
KIND_BY_FORMAT = {"text": "text", "csv": "csv", "tsv": "tsv", "json": "json", "jsonl": "json"}
"""Simple Transformers' `data_format` (with `use_hf_datasets`): one format for every file, whatever its name."""
TABLE_KINDS = ("parquet", "arrow", "dataset")
DATASET_NAME = re.compile(r"^(?P<name>[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?:\[(?P<split>[\w.-]+)\])?$")
SKIPPED_NAMES = {"_SUCCESS", "_metadata", "_common_metadata"}
"""Marker files Spark and Hive leave beside Parquet parts; never corpus text."""

csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a document per cell can be long


class DatasetRef(type(Path())):
    """A corpus source that is not a plain path: a dataset name in the local `datasets` cache (`wikitext`,
    `user/corpus`), or a saved DatasetDict folder with a split, `NAME[SPLIT]` / `FOLDER[SPLIT]` (without a split
    the `dataset_split` setting chooses). `str()` gives back what the user wrote, so it can be passed on to
    another process and resolved again."""

    cache_root: Path | None = None
    """For a name: the folder of its cached configurations (found by `resolve_files`)."""

    def name_and_split(self) -> tuple[str, str | None]:
        m = DATASET_NAME.match(str(self)) or re.match(r"^(?P<name>.*?)(?:\[(?P<split>[\w.-]+)\])?$", str(self))
        return m.group("name"), m.group("split")


# ---------------------------------------------------------------------------------------------------------------
# Which container a source is
# ---------------------------------------------------------------------------------------------------------------

def is_dataset_folder(folder: Path) -> bool:
    """A folder written by save_to_disk (a Dataset or a DatasetDict), or a `datasets` cache folder of one
    configuration (dataset_info.json beside the split files)."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file() or (
        (folder / "dataset_info.json").is_file() and any(folder.glob("*.arrow")))


def kind_of(source: Path, data_format: str | None = None) -> str:
    """text, json, csv, tsv, parquet, arrow or dataset. `data_format` (Simple Transformers' use_hf_datasets)
    decides for files; otherwise the extension does (a trailing .gz is looked through: gzip is read by its bytes)."""
    if isinstance(source, DatasetRef) or source.is_dir():
        return "dataset"
    if data_format:
        return KIND_BY_FORMAT[data_format]
    suffixes = [s.lower() for s in source.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return KIND_BY_SUFFIX.get(suffixes[-1], "text") if suffixes else "text"


def find_dataset(text: str, cache_dir: str | None = None) -> tuple[DatasetRef | None, str]:
    """A path that does not exist, read as a dataset name (or FOLDER[SPLIT]): the reference, or None and why not."""
    folder, _, split = text.rpartition("[")
    if split.endswith("]") and Path(folder).is_dir() and (Path(folder) / "dataset_dict.json").is_file():
        return DatasetRef(text), ""
    m = DATASET_NAME.match(text)
    if not m or Path(m.group("name")).suffix.lower() in {*KIND_BY_SUFFIX, ".txt", ".gz"}:
        return None, "no such file or directory"  # a file name, not a dataset's
    root = cached_dataset_root(m.group("name"), cache_dir)
    if root is None:
        where = cache_dir or _default_cache()
        return None, (f"no such file or directory, nor a dataset named {m.group('name')!r} in the datasets cache "
                      f"{where} (datasets are read offline, never downloaded: load it once with "
                      "datasets.load_dataset, or point dataset_cache_dir at the cache that holds it)")
    ref = DatasetRef(text)
    ref.cache_root = root
    return ref, ""


def _default_cache() -> str:
    import datasets

    return str(datasets.config.HF_DATASETS_CACHE)


def cached_dataset_root(name: str, cache_dir: str | None = None) -> Path | None:
    """`<cache>/<namespace>___<name>/`, where `datasets` keeps every cached configuration of `name`, when it
    holds at least one prepared configuration (`<config>/<version>/<hash>/dataset_info.json`)."""
    from datasets.naming import camelcase_to_snakecase

    parts = name.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = Path(os.path.expanduser(str(cache_dir or _default_cache()))) / "___".join(parts)
    return root if any(root.glob("*/*/*/dataset_info.json")) else None


def members(source: Path) -> list[Path]:
    """The files a source is made of, for its content hash: the file itself, or a dataset folder's data and
    metadata files (lock files and `datasets`' own `cache-*.arrow` map results left out)."""
    if isinstance(source, DatasetRef):
        name, _ = source.name_and_split()
        root = Path(name) if Path(name).is_dir() else (source.cache_root or cached_dataset_root(name))
        if root is None:
            raise CorpusError(f"{source}: dataset not found in the datasets cache")
        source = root
    if not source.is_dir():
        return [source]
    found = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / n for n in sorted(names) if not n.startswith(".") and not n.endswith(".lock")
                     and not n.startswith("cache-"))
    return sorted(found)


# ---------------------------------------------------------------------------------------------------------------
# Checks before any work
# ---------------------------------------------------------------------------------------------------------------

def quick_problem(source: Path) -> str | None:
    """What `resolve_files` can tell without settings: an unreadable Parquet footer or Arrow header, an
    unreadable saved-dataset description."""
    kind = kind_of(source)
    try:
        if kind == "parquet":
            _parquet_file(source)
        elif kind == "arrow":
            _arrow_batches(source, mmap=True, schema_only=True)
        elif kind == "dataset" and not isinstance(source, DatasetRef):
            for meta in ("dataset_dict.json", "state.json", "dataset_info.json"):
                if (source / meta).is_file():
                    json.loads((source / meta).read_text(encoding="utf-8"))
    except CorpusError as e:
        return str(e).removeprefix(f"{source}: ")
    except ValueError as e:
        return f"not a readable saved dataset ({e})"
    return None


def check(source: Path, reading) -> None:
    """Raise CorpusError (naming the source) for anything that would stop reading it under `reading`."""
    kind = kind_of(source, reading.data_format)
    if kind == "json":
        _check_json(source, reading)
    elif kind in ("csv", "tsv"):
        _csv_header_index(source, reading, _csv_rows_raw(source, reading, CorpusStats(), kind))
    elif kind == "parquet":
        pf = _parquet_file(source)
        _column_index(source, pf.schema_arrow, reading.text_column)
    else:
        for path in _arrow_paths(source, reading) if kind == "dataset" else [source]:
            schema, batches = _arrow_batches(path, mmap=True)
            _column_index(source, schema, reading.text_column, path)
            try:
                for batch in batches:  # zero-copy over the memory map: only batch headers are read
                    batch.validate()
            except Exception as e:
                raise CorpusError(f"{_where(source, path)}: corrupt Arrow data ({type(e).__name__}: {e})") from None


def _check_json(source: Path, reading) -> None:
    seen_column, first_keys, column = False, None, reading.text_column
    for batch in _json_batches(source, reading, CorpusStats()):
        first_keys = list(batch[0]) if first_keys is None else first_keys
        seen_column = seen_column or any(column in obj for obj in batch)
    if first_keys is not None and not seen_column:
        raise CorpusError(_no_column(source, reading.text_column, first_keys))


def _no_column(source, column: str, columns) -> str:
    return (f"{source}: no {column!r} column (columns: {', '.join(columns) or 'none'}); "
            "set text_column to the one holding the text")


def _where(source: Path, path: Path) -> str:
    return str(source) if path == source else f"{source} ({path.name})"


# ---------------------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------------------

def rows(source: Path, reading, stats: CorpusStats) -> Iterator[list]:
    """The rows of one source in lists of up to ROWS_PER_BATCH raw values, in order: a text file's lines (blank
    ones included, a huge line in pieces), the text column of any other container (str, or None / anything else
    for rows without text). Counts bytes and files into `stats`; invalid bytes too."""
    kind = kind_of(source, reading.data_format)
    if kind == "text":  # its lines are its rows; the reader counts files, bytes and lines itself
        yield from batched(iter_lines(source, reading.strict_utf8, stats, reading.encoding))
        return
    size = source.stat().st_size if kind != "dataset" else 0
    if kind == "json":
        column = reading.text_column
        yield from ([obj.get(column) for obj in batch] for batch in _json_batches(source, reading, stats))
    elif kind in ("csv", "tsv"):
        raw = _csv_rows_raw(source, reading, stats, kind)
        index = _csv_header_index(source, reading, raw)
        yield from batched(row[index] if index < len(row) else None for row in raw if row)
    elif kind == "parquet":
        yield from _parquet_rows(source, reading, stats)
    elif kind in ("arrow", "dataset"):
        for path in _arrow_paths(source, reading) if kind == "dataset" else [source]:
            schema, batches = _arrow_batches(path, mmap=False)
            index = _column_index(source, schema, reading.text_column, path)
            yield from _arrow_values((b.column(index) for b in batches), source, reading, stats, path)
            size += path.stat().st_size if kind == "dataset" else 0
    stats.files += 1
    stats.bytes += size


def batched(values: Iterable, size: int = ROWS_PER_BATCH) -> Iterator[list]:
    """`values` in lists of `size` (the last one shorter): the one batching helper of the data layer."""
    batch = []
    for v in values:
        batch.append(v)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _json_batches(source: Path, reading, stats: CorpusStats) -> Iterator[list[dict]]:
    """The objects of a JSON Lines file, ROWS_PER_BATCH lines at a time (blank lines skipped). A batch is parsed
    as one JSON array, 2-3x faster than line by line; when that fails, or does not give one object per line,
    its lines are parsed one by one to name the first bad one."""
    lines = decoded_lines(source, reading.strict_utf8, stats, reading.encoding)
    numbered = ((number, line.strip()) for number, line in enumerate(lines, 1) if line.strip())
    for batch in batched(numbered):
        yield _parse_json_lines(source, batch)


def _parse_json_lines(source: Path, batch: list[tuple[int, str]]) -> list[dict]:
    # Lines that each open and close an object cannot be regrouped by the commas between them unless two of them
    # are broken in ways that cancel out; the count and type checks below catch every other regrouping.
    if all(line[0] == "{" and line[-1] == "}" for _, line in batch):
        try:
            objects = json.loads("[" + ",".join(line for _, line in batch) + "]")
            if len(objects) == len(batch) and all(isinstance(o, dict) for o in objects):
                return objects
        except ValueError:
            pass
    objects = []
    for number, line in batch:
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise CorpusError(f"{source}: line {number} is not valid JSON ({getattr(e, 'msg', e)} at column "
                              f"{getattr(e, 'colno', '?')}); JSON Lines need one object per line") from None
        if not isinstance(obj, dict):
            raise CorpusError(f"{source}: line {number} is a JSON {type(obj).__name__}, not an object; JSON Lines "
                              "need one object per line")
        objects.append(obj)
    return objects


def _csv_rows_raw(source: Path, reading, stats: CorpusStats, kind: str):
    lines = decoded_lines(source, reading.strict_utf8, stats, reading.encoding)
    # Line ends are given back so a quoted cell spanning lines keeps its newline.
    return csv.reader((line + "\n" for line in lines), delimiter="\t" if kind == "tsv" else ",")


def _csv_header_index(source: Path, reading, raw) -> int:
    header = next(raw, None) or []
    if reading.text_column not in header:
        raise CorpusError(_no_column(source, reading.text_column, header))
    return header.index(reading.text_column)


# ---- Arrow and Parquet ----------------------------------------------------------------------------------------

def _parquet_file(source: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(str(source), buffer_size=PARQUET_BUFFER, pre_buffer=False)
    except (pa.ArrowException, OSError) as e:
        raise CorpusError(f"{source}: not a readable Parquet file ({type(e).__name__}: {e})") from None


def _parquet_rows(source: Path, reading, stats: CorpusStats) -> Iterator[list]:
    import pyarrow as pa

    pf = _parquet_file(source)
    _column_index(source, pf.schema_arrow, reading.text_column)
    batches = pf.iter_batches(batch_size=ROWS_PER_BATCH, columns=[reading.text_column], use_threads=False)
    columns = (b.column(0) for b in _guarded(batches, source, pa))
    yield from _arrow_values(columns, source, reading, stats, source)


def _guarded(batches, source: Path, pa) -> Iterator:
    try:
        yield from batches
    except (pa.ArrowException, OSError) as e:
        raise CorpusError(f"{source}: corrupt data ({type(e).__name__}: {e})") from None


def _arrow_batches(path: Path, mmap: bool, schema_only: bool = False):
    """(schema, batches) of an Arrow IPC file: the random-access file format or the stream format `datasets`
    writes. Without `mmap` each batch is read into memory and released when the next is read."""
    import pyarrow as pa

    try:
        stream = pa.memory_map(str(path)) if mmap else pa.OSFile(str(path))
        try:
            reader = pa.ipc.open_file(stream)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        except pa.ArrowInvalid:
            stream.seek(0)
            reader = pa.ipc.open_stream(stream)
            batches = iter(reader)
    except (pa.ArrowException, OSError) as e:
        raise CorpusError(f"{path}: not a readable Arrow file ({type(e).__name__}: {e})") from None
    return reader.schema, (() if schema_only else _guarded(batches, path, pa))


def _column_index(source: Path, schema, column: str, path: Path | None = None) -> int:
    import pyarrow as pa

    if column not in schema.names:
        raise CorpusError(_no_column(source if path in (None, source) else _where(source, path), column,
                                     schema.names))
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise CorpusError(f"{source}: column {column!r} holds {kind}, not text")
    return schema.names.index(column)


def _arrow_values(columns, source: Path, reading, stats: CorpusStats, path: Path) -> Iterator[list]:
    """Python values of Arrow string arrays, ROWS_PER_BATCH at a time; invalid UTF-8 (Parquet does not check
    it) is replaced and counted, or an error under strict_utf8."""
    row = 0
    for array in columns:
        for start in range(0, len(array), ROWS_PER_BATCH):
            piece = array.slice(start, ROWS_PER_BATCH)
            try:
                values = piece.to_pylist()
            except UnicodeDecodeError:
                values = _repair(piece, source, path, reading.strict_utf8, stats, row + start)
            yield values
        row += len(array)


def _repair(piece, source: Path, path: Path, strict: bool, stats: CorpusStats, first_row: int) -> list:
    import pyarrow as pa

    out = []
    for i, raw in enumerate(piece.cast(pa.large_binary()).to_pylist()):
        if raw is None:
            out.append(None)
            continue
        text, replaced = _decode_counting(raw)
        if replaced and strict:
            raise CorpusError(f"{_where(source, path)}: invalid UTF-8 in row {first_row + i} (strict_utf8=True)")
        if replaced and str(source) not in stats.files_with_invalid_bytes:
            stats.files_with_invalid_bytes.append(str(source))
        stats.invalid_bytes_replaced += replaced
        out.append(text)
    return out


def _decode_counting(raw: bytes) -> tuple[str, int]:
    out, pos, replaced = [], 0, 0
    while True:
        try:
            out.append(raw[pos:].decode("utf-8"))
            return "".join(out), replaced
        except UnicodeDecodeError as e:
            out.append(raw[pos:pos + e.start].decode("utf-8") + "\ufffd")
            replaced += e.end - e.start
            pos += e.end


# ---- datasets: saved folders and cached names -----------------------------------------------------------------

def _arrow_paths(source: Path, reading) -> list[Path]:
    """The Arrow files of the chosen split of a saved dataset, a DatasetDict, a cache folder or a cached name."""
    import datasets

    name, split = source.name_and_split() if isinstance(source, DatasetRef) else (str(source), None)
    split = split or reading.split
    folder = Path(name)
    try:
        if not folder.is_dir():
            folder = _cached_folder(source, name, reading)
        elif not (folder / "state.json").is_file() and not (folder / "dataset_dict.json").is_file():
            pass  # a cache folder given as a path
        else:
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise CorpusError(f"{source}: no split {split!r} (splits: {', '.join(loaded)}); set "
                                      "dataset_split or write FOLDER[SPLIT]")
                loaded = loaded[split]
            return [Path(f["filename"]) for f in loaded.cache_files]
        return _split_files(source, folder, split)
    except CorpusError:
        raise
    except Exception as e:  # datasets raises many types for unreadable folders; name the source whatever it was
        raise CorpusError(f"{source}: cannot be read as a dataset ({type(e).__name__}: {e})") from None


def _cached_folder(source, name: str, reading) -> Path:
    """The folder of a dataset in the `datasets` cache, found offline the way `load_dataset` finds it without a
    network: the newest prepared copy of the configuration (`dataset_config`, or the only one cached)."""
    from datasets.packaged_modules.cache.cache import Cache

    import datasets

    cache = reading.cache_dir or (str(source.cache_root.parent) if getattr(source, "cache_root", None) else None)
    chatty = datasets.utils.logging.get_logger(Cache.__module__)
    level = chatty.level
    chatty.setLevel(logging.ERROR)  # it warns "Found the latest cached dataset configuration" on every lookup
    try:
        builder = Cache(cache_dir=cache, dataset_name=name.split("/")[-1], repo_id=name,
                        config_name=reading.config, version="auto", hash="auto")
    except ValueError as e:
        raise CorpusError(f"{source}: not usable from the datasets cache {cache or _default_cache()} "
                          f"({e})".replace("\n", " ")) from None
    finally:
        chatty.setLevel(level)
    return Path(builder.cache_dir)


def _split_files(source, folder: Path, split: str) -> list[Path]:
    """The Arrow files of one split of a `datasets` cache folder, as its dataset_info.json lists them."""
    from datasets.naming import filenames_for_dataset_split

    info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    splits = info.get("splits") or {}
    if split not in splits:
        raise CorpusError(f"{source}: no split {split!r} in {folder} (splits: {', '.join(splits) or 'none'}); "
                          "set dataset_split or write NAME[SPLIT]")
    entry = splits[split]
    names = filenames_for_dataset_split(str(folder), entry.get("dataset_name") or info.get("dataset_name"), split,
                                        "arrow", entry.get("shard_lengths"))
    missing = [n for n in names if not os.path.isfile(n)]
    if missing:
        raise CorpusError(f"{source}: split {split!r} is incomplete in {folder} (missing {Path(missing[0]).name})")
    return [Path(n) for n in names]
