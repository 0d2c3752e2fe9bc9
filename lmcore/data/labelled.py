"""Labelled text for sequence classification: read (a DataFrame, or any file the engine reads), checked, mapped
to label ids, and tokenized into the engine's `Features` (with `labels`, and `second_from` for text pairs), so the
one training loop batches and orders labelled examples exactly as it does a corpus.

Owns: finding the text and label columns, skipping empty or non-text rows (counted, one warning), the label <-> id
mapping, and the bad-input errors that name the file and column. Labelled sets are small next to corpora: they
are read and tokenized in memory. pandas is never imported: a DataFrame is read through its own methods.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..models.args import ArgsError
from ..models.classification_args import LABEL_COLUMNS
from .corpus import CorpusReading, CorpusStats, resolve_files
from .features import Features, clean_backend

log = logging.getLogger(__name__)

PAIR_COLUMNS = ("text_a", "text_b")


@dataclass
class InputExample:
    """One labelled example as Simple Transformers hands back wrong predictions: its row number (`guid`), its
    text (`text_a`, and `text_b` for pairs) and its label as the user gave it."""

    guid: int
    text_a: str
    text_b: str | None = None
    label: Any = None


@dataclass
class LabelledRows:
    where: str
    """What the rows came from, for messages: "train_df" or the files."""
    text_a: list[str]
    text_b: list[str] | None
    labels: list | None

    def __len__(self) -> int:
        return len(self.text_a)

    def examples(self, rows) -> list[InputExample]:
        return [InputExample(int(i), self.text_a[i], self.text_b[i] if self.text_b else None,
                             self.labels[i] if self.labels is not None else None) for i in rows]


# ---- reading ----------------------------------------------------------------------------------------------------

def read_labelled(data, args, where: str, labelled: bool = True) -> LabelledRows:
    """The rows of `data` (a DataFrame, a file, a folder or a list of them) with their labels (`labelled`), empty
    and non-text rows skipped with one warning. Raises ArgsError naming the input and column."""
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        table, where = _frame_columns(data), where
    elif isinstance(data, (str, os.PathLike)) or (isinstance(data, (list, tuple)) and data and
                                                 all(isinstance(d, (str, os.PathLike)) for d in data)):
        table, where = _file_columns(data, args)
    else:
        raise ArgsError(f"{where}: expected a pandas DataFrame (columns text and labels, or text_a, text_b and "
                        f"labels) or the path of a labelled file, not {type(data).__name__}")
    return _clean(table, args, where, labelled)


def _frame_columns(frame) -> dict[str, list]:
    columns = list(frame.columns)
    if not any(isinstance(c, str) for c in columns) and len(columns) >= 2:
        # Simple Transformers' older style: no header, the text in the first column and the label in the second.
        log.warning("DataFrame without column names: column 0 is taken as the text and column 1 as the labels")
        return {"text": frame.iloc[:, 0].tolist(), "labels": frame.iloc[:, 1].tolist()}
    return {str(c): frame[c].tolist() for c in columns}


def _file_columns(paths, args) -> tuple[dict[str, list], str]:
    """Every column of every labelled file (rows in order, files one after the other)."""
    reading = CorpusReading.from_args(args)
    files = resolve_files(paths, args.encoding, args.dataset_cache_dir)
    tables = [(f, _read_table(f, reading)) for f in files]
    shared = set.intersection(*(set(t) for _, t in tables))
    out = {c: [v for _, t in tables for v in t[c]] for c in tables[0][1] if c in shared}
    return out, ", ".join(str(f) for f in files)


def _read_table(source: Path, reading: CorpusReading) -> dict[str, list]:
    from . import containers as c

    kind, stats = c.kind_of(source, reading.data_format), CorpusStats()
    if kind == "text":
        raise ArgsError(f"{source}: a plain text file has no label column; give labelled text as JSON Lines, CSV / "
                        "TSV with a header row, Parquet, Arrow or a saved dataset (or a DataFrame)")
    if kind == "json":
        rows = [obj for batch in c._json_batches(source, reading, stats) for obj in batch]
        names = list(dict.fromkeys(k for obj in rows for k in obj))
        return {n: [obj.get(n) for obj in rows] for n in names}
    if kind in ("csv", "tsv"):
        raw = c._csv_rows_raw(source, reading, stats, kind)
        header = next(raw, None) or []
        rows = [r for r in raw if r]
        return {n: [r[i] if i < len(r) else None for r in rows] for i, n in enumerate(header)}
    if kind == "parquet":
        table = c._parquet_file(source).read()
        return {n: table.column(n).to_pylist() for n in table.column_names}
    out: dict[str, list] = {}
    for path in c._arrow_paths(source, reading) if kind == "dataset" else [source]:
        schema, batches = c._arrow_batches(path, mmap=True)
        for batch in batches:
            for n in schema.names:
                out.setdefault(n, []).extend(batch.column(schema.names.index(n)).to_pylist())
    return out


def _clean(table: dict[str, list], args, where: str, labelled: bool) -> LabelledRows:
    pairs = all(c in table for c in PAIR_COLUMNS)
    text_cols = PAIR_COLUMNS if pairs else (args.text_column,)
    for col in text_cols:
        if col not in table:
            raise ArgsError(f"{where}: no text column {col!r} (columns: {', '.join(table) or 'none'}); name it with "
                            "args.text_column, or give text pairs as text_a and text_b")
    label_col = _label_column(table, args, where) if labelled else None
    n = len(table[text_cols[0]])
    keep, no_text, no_label = [], 0, 0
    for i in range(n):
        if not all(isinstance(table[c][i], str) and table[c][i].strip() for c in text_cols):
            no_text += 1
        elif label_col is not None and _missing(table[label_col][i]):
            no_label += 1
        else:
            keep.append(i)
    if no_text or no_label:
        log.warning("%s: skipped %d of %d rows (%d with empty or non-text %s, %d without a label in %r)", where,
                    no_text + no_label, n, no_text, " / ".join(text_cols), no_label, label_col)
    if not keep:
        raise ArgsError(f"{where}: no usable rows (every one of {n} has empty or non-text "
                        f"{' / '.join(text_cols)} or no label)")
    labels = [table[label_col][i] for i in keep] if label_col else None
    if labels and any(isinstance(v, (list, tuple, np.ndarray)) for v in labels):
        raise ArgsError(f"{where}: column {label_col!r} holds lists of labels (multi-label). That is Simple "
                        "Transformers' MultiLabelClassificationModel: one sigmoid per label, thresholded, scored per "
                        "label; not provided here. Give one label per row")
    texts = [[table[c][i] for i in keep] for c in text_cols]
    return LabelledRows(where, texts[0], texts[1] if pairs else None, labels)


def _label_column(table: dict, args, where: str) -> str:
    wanted = [args.label_column] if args.label_column else list(LABEL_COLUMNS)
    for col in wanted:
        if col in table:
            return col
    raise ArgsError(f"{where}: no label column {' or '.join(map(repr, wanted))} (columns: {', '.join(table)}); "
                    "name it with args.label_column")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str)
                                                                                  and not value.strip())


# ---- labels <-> ids ---------------------------------------------------------------------------------------------

def infer_labels(labels: list) -> list:
    """The labels_list for training labels when none is given: integers are their own ids (0 .. max), anything
    else gets ids in sorted order."""
    values = [_plain(v) for v in labels]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise ArgsError(f"integer labels must be ids >= 0 (found {min(values)}); give labels_list to map them")
        return list(range(max(values) + 1))
    return sorted({str(v) for v in values})


def label_ids(rows: LabelledRows, labels_map: dict, regression: bool) -> np.ndarray:
    """Each row's label id (int64), or its target (float32) with `regression`. Raises ArgsError naming the labels
    the map does not know (evaluation labels never seen in training)."""
    if regression:
        try:
            return np.asarray([float(v) for v in rows.labels], dtype=np.float32)
        except (TypeError, ValueError):
            raise ArgsError(f"{rows.where}: regression needs numeric labels") from None
    by_text = {str(k): v for k, v in labels_map.items()}
    unknown = sorted({str(_plain(v)) for v in rows.labels if _plain(v) not in labels_map
                      and str(_plain(v)) not in by_text})
    if unknown:
        raise ArgsError(f"{rows.where}: label(s) {', '.join(map(repr, unknown[:10]))} are not among the model's "
                        f"labels {list(labels_map)} (labels_list); evaluation labels must be seen in training")
    return np.asarray([labels_map[_plain(v)] if _plain(v) in labels_map else by_text[str(_plain(v))]
                       for v in rows.labels], dtype=np.int64)


def _plain(value):
    """numpy scalars as Python values (a label read from a DataFrame is often np.int64)."""
    return value.item() if isinstance(value, np.generic) else value


# ---- tokenizing -------------------------------------------------------------------------------------------------

def encode(rows: LabelledRows, tokenizer, max_length: int, types: bool) -> Features:
    """Tokenize `rows` (pairs as the tokenizer's own pair template, e.g. [CLS] a [SEP] b [SEP]), each cut to
    `max_length` tokens (the longer text of a pair first), into in-memory Features; with `types`, each pair's
    second-segment start for token_type_ids."""
    backend = clean_backend(tokenizer)
    backend.enable_truncation(max_length=max_length, strategy="longest_first")
    inputs = list(zip(rows.text_a, rows.text_b)) if rows.text_b else rows.text_a
    encoded = backend.encode_batch(inputs, add_special_tokens=True)
    lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))
    tokens = np.fromiter((t for e in encoded for t in e.ids), dtype=np.int64, count=int(lengths.sum()))
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    second = None
    if types and rows.text_b:
        second = np.asarray([e.type_ids.index(1) if 1 in e.type_ids else len(e.ids) for e in encoded], np.int64)
    meta = {"dataset_type": "labelled", "num_examples": len(encoded), "num_tokens": int(lengths.sum()),
            "prefix_tokens": 0, "max_length": max_length, "source": rows.where,
            "truncated": int(sum(len(e.overflowing) > 0 for e in encoded))}
    return Features(tokens.astype(dtype), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                    Path("<memory>"), meta, second_from=second)
