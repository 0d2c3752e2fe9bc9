"""Does pretraining help? A labelled task read as users keep it, split by hash, and a model fine-tuned on it over
seeds x a learning-rate grid, beside the same architecture and tokenizer from random initialisation.

Owns: finding the text and label columns, label ids, the train / validation / test split, the grid of fine-tunings,
choosing each arm's learning rate on the validation split (never the test split), the summary figures, and the
random-initialisation baseline's cache (a folder the caller names). Imports pandas, numpy and the engine's
`ClassificationModel`; never prefect or mlflow (tasks/downstream.py logs what this returns).

    from lmcore.downstream import TaskSpec, load_task, compare
    task = load_task(TaskSpec.from_entry("reviews.csv"))
    result = compare("bert", "outputs/", task, seeds=3, cache_dir="cache/")   # grid by the encoder's width
    result["gain"]   # pretrained - random-init test accuracy, each arm at its best rate on validation
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .models.classification_args import LABEL_COLUMNS
from .objectives.electra import DISCRIMINATOR_DIR

PAIR_COLUMNS = ("text_a", "text_b")
METRICS = ("accuracy", "f1", "mcc")
LEARNING_RATES_BY_WIDTH = ((128, (1e-3, 2e-3, 5e-3)), (512, (1e-4, 3e-4, 1e-3)), (None, (2e-5, 5e-5, 1e-4)))
"""The default grid by the encoder's hidden size. Demo size (hidden 64) measured on the default task
(bench/downstream_quality.py, a few hundred steps): at 1e-4 both arms stay at the majority class and at 5e-4 the
pretrained one does; at 5e-3 the pretrained one collapses to it while random initialisation peaks (2e-3 to 5e-3);
at 1e-2 both collapse. Wider: BERT's
fine-tuning range (2e-5 to 1e-4), and between the two for BERT-mini-like widths. Wide on purpose: a pretrained and
a random-init model of one size can prefer rates several times apart."""
DEFAULT_SEEDS = 3
DEFAULT_ARGS = {"num_train_epochs": 3, "train_batch_size": 32, "eval_batch_size": 64, "max_seq_length": 128,
                "warmup_ratio": 0.1}
"""Fine-tuning settings (ClassificationArgs) unless a task's `args` says otherwise; saving is the caller's."""
NOT_IN_KEY = ("thread_count", "process_count", "dataloader_num_workers", "silent", "eval_batch_size")
"""Settings that change how fast a fine-tuning runs, not what it computes: left out of the keys."""
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class LabelledDataError(ValueError):
    """A labelled file or model folder that cannot be used; the message names the file and the column."""


@dataclasses.dataclass
class TaskSpec:
    """One labelled task: a path (a file, or a folder holding train.* and optionally test.* / validation.*) and
    its settings."""

    path: str
    """A labelled file (csv, tsv, jsonl, json, parquet; compressed .gz / .bz2 / .xz too) or folder."""
    name: str | None = None
    """The task's name in metric names (downstream.<name>.accuracy); default: from the file name."""
    text_column: str | None = None
    """Default: `text`, or the pair `text_a` + `text_b`."""
    label_column: str | None = None
    """Default: `labels`, else `label`."""
    test: str | None = None
    """The user's own test file; default: a hash-chosen `test_fraction` of the rows."""
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    """Of the training rows: where each arm's learning rate is chosen."""
    max_train_examples: int | None = None
    """Fine-tune on at most this many training rows (a hash-chosen subset, the same every time)."""
    args: dict = dataclasses.field(default_factory=dict)
    """ClassificationArgs fields for the fine-tunings (over DEFAULT_ARGS)."""

    @classmethod
    def from_entry(cls, entry) -> "TaskSpec":
        """A path, or a mapping {"path": ..., settings...}; unknown settings are refused naming them."""
        if isinstance(entry, (str, os.PathLike)):
            return cls(path=str(entry))
        if not isinstance(entry, dict) or "path" not in entry:
            raise LabelledDataError(f"downstream entry {entry!r}: a path, or a mapping with `path` and settings")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - fields)
        if unknown:
            raise LabelledDataError(f"downstream entry {entry['path']!r}: unknown setting(s) {', '.join(unknown)} "
                                    f"(known: {', '.join(sorted(fields))})")
        return cls(**{**entry, "path": str(entry["path"])})

    def task_name(self) -> str:
        if self.name:
            return self.name
        p = Path(self.path)
        stem = p.name
        for suffix in (".gz", ".bz2", ".xz", *TABLE_SUFFIXES):
            stem = stem.removesuffix(suffix)
        if stem in ("train", "data", "labelled", "all") and p.parent.name:
            stem = p.parent.name
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem) or "task"


@dataclasses.dataclass
class LabelledTask:
    name: str
    spec: TaskSpec
    text_columns: tuple
    label_column: str
    labels: list
    """Label values in id order (sorted): id i is labels[i]."""
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    skipped: dict
    """{file: {"empty text": n, "no label": n}} rows left out."""
    data_hash: str

    def key(self, seeds: int, learning_rates, args: dict) -> str:
        """What a figure on this task depends on besides the model: the data, the split and the settings."""
        settings = {k: v for k, v in fine_tune_args(self, args).items() if k not in NOT_IN_KEY}
        return _digest(self.data_hash, self.text_columns, [str(v) for v in self.labels], seeds,
                       [float(x) for x in learning_rates], settings)

    def train_texts(self) -> list[str]:
        """The texts (no labels) of the training and validation rows: domain text to pretrain on that holds no
        test row."""
        rows = pd.concat([self.train, self.validation])
        return [t for c in ("text", *PAIR_COLUMNS) if c in rows.columns for t in rows[c]]

    def summary(self) -> dict:
        return {"task": self.name, "path": self.spec.path, "test": self.spec.test or "hash split",
                "text_columns": list(self.text_columns), "label_column": self.label_column,
                "labels": [str(v) for v in self.labels], "train": len(self.train),
                "validation": len(self.validation), "test_rows": len(self.test),
                "skipped": sum(sum(v.values()) for v in self.skipped.values()), "data_hash": self.data_hash[:16]}


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read_table(path: str | Path) -> pd.DataFrame:
    """A labelled file as a DataFrame, by its suffix (compression through pandas); a saved `datasets` folder."""
    p = Path(path)
    if p.is_dir() and (p / "dataset_info.json").exists():
        import datasets

        return datasets.load_from_disk(str(p)).to_pandas()
    name = p.name.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(suffix)
    try:
        if name.endswith(".tsv"):
            return pd.read_csv(p, sep="\t", keep_default_na=False, na_values=[""])
        if name.endswith(".csv"):
            return pd.read_csv(p, keep_default_na=False, na_values=[""])
        if name.endswith((".jsonl", ".json")):
            try:
                return pd.read_json(p, lines=True, dtype=False)
            except ValueError:
                return pd.read_json(p, dtype=False)
        if name.endswith(".parquet"):
            return pd.read_parquet(p)
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise LabelledDataError(f"{p}: cannot be read as a labelled table: {e}") from None
    raise LabelledDataError(f"{p}: not a labelled file (csv, tsv, jsonl, json or parquet, possibly compressed)")


def task_files(spec: TaskSpec) -> tuple[Path, Path | None, Path | None]:
    """(train file, test file or None, validation file or None) of a task's path."""
    p = Path(spec.path).expanduser()
    if not p.exists():
        raise LabelledDataError(f"{spec.path}: no such labelled file or folder")
    test = Path(spec.test).expanduser() if spec.test else None
    if test is not None and not test.exists():
        raise LabelledDataError(f"{spec.test}: no such test file (the `test` of {spec.path})")
    if p.is_file() or (p / "dataset_info.json").exists():
        return p, test, None
    found = {}
    for f in sorted(p.iterdir()):
        split = f.name.split(".")[0].lower()
        if not f.name.startswith(".") and split in ("train", "test", "validation", "dev"):
            found.setdefault("validation" if split == "dev" else split, f)
    if "train" not in found:
        raise LabelledDataError(f"{spec.path}: a labelled folder needs a train.<csv|jsonl|parquet|...> file")
    return found["train"], test or found.get("test"), found.get("validation")


def find_columns(columns, spec: TaskSpec, where: str) -> tuple[tuple, str]:
    """(text columns, label column) as users name them: labels in `labels` or `label`, text in `text` or the pair
    `text_a` + `text_b`, else the columns the task names."""
    columns = [str(c) for c in columns]
    if spec.label_column:
        if spec.label_column not in columns:
            raise LabelledDataError(f"{where}: no label column {spec.label_column!r} (label_column); its "
                                    f"columns: {', '.join(columns)}")
        label = spec.label_column
    else:
        label = next((c for c in LABEL_COLUMNS if c in columns), None)
        if label is None:
            raise LabelledDataError(f"{where}: no label column (looked for {' / '.join(LABEL_COLUMNS)}); name it "
                                    f"with label_column (its columns: {', '.join(columns)})")
    if spec.text_column:
        if spec.text_column not in columns:
            raise LabelledDataError(f"{where}: no text column {spec.text_column!r} (text_column); its columns: "
                                    f"{', '.join(columns)}")
        return (spec.text_column,), label
    if "text" in columns:
        return ("text",), label
    if all(c in columns for c in PAIR_COLUMNS):
        return PAIR_COLUMNS, label
    raise LabelledDataError(f"{where}: no text column (looked for `text`, or `text_a` + `text_b`); name it with "
                            f"text_column (its columns: {', '.join(columns)})")


def _is_text(v) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _label_value(v):
    """A label as a plain hashable value: integral numbers as int (1.0 -> 1), strings stripped; None if missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if float(v).is_integer() else float(v)
    s = str(v).strip()
    return s or None


def clean_rows(df: pd.DataFrame, text_columns: tuple, label: str, where: str) -> tuple[pd.DataFrame, dict]:
    """Rows with text in every text column and a label, as columns text (or text_a, text_b) + labels; what was
    left out, counted by reason."""
    text_ok = np.ones(len(df), dtype=bool)
    for c in text_columns:
        text_ok &= np.fromiter((_is_text(v) for v in df[c]), bool, len(df))
    labels = [_label_value(v) for v in df[label]]
    label_ok = np.array([v is not None for v in labels], dtype=bool)
    keep = text_ok & label_ok
    names = ("text",) if len(text_columns) == 1 else PAIR_COLUMNS
    out = pd.DataFrame({name: df[c].to_numpy()[keep] for name, c in zip(names, text_columns)})
    out["labels"] = [v for v, k in zip(labels, keep) if k]
    skipped = {k: int(n) for k, n in (("empty or non-text", int((~text_ok).sum())),
                                     ("no label", int((text_ok & ~label_ok).sum()))) if n}
    if not len(out):
        raise LabelledDataError(f"{where}: no usable rows (text in {' + '.join(text_columns)} and a label in "
                                f"{label!r}); left out: {skipped}")
    return out.reset_index(drop=True), skipped


def sort_labels(values) -> list:
    """Label values in id order: numbers numerically, strings alphabetically (numbers first when mixed)."""
    return sorted(set(values), key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0, str(v)))


def hash_fraction(df: pd.DataFrame, salt: str) -> np.ndarray:
    """A number in [0, 1) per row from the hash of its text (not its position): the same row falls on the same
    side of a split however the file is ordered, and duplicate texts never straddle a split."""
    cols = [c for c in ("text", "text_a", "text_b") if c in df.columns]
    keys = ["\x1f".join(str(row) for row in rows) for rows in zip(*(df[c] for c in cols))]
    return np.array([int.from_bytes(hashlib.sha256(f"{salt}\x1e{k}".encode()).digest()[:8], "big") / 2 ** 64
                     for k in keys])


def load_task(spec: TaskSpec) -> LabelledTask:
    """Read, check and split a labelled task; every problem names its file and column (LabelledDataError)."""
    train_file, test_file, validation_file = task_files(spec)
    frames, skipped, columns = {}, {}, None
    for role, f in (("train", train_file), ("test", test_file), ("validation", validation_file)):
        if f is None:
            continue
        raw = read_table(f)
        text_columns, label = find_columns(raw.columns, spec, str(f))
        columns = columns or (text_columns, label)
        frames[role], left_out = clean_rows(raw, text_columns, label, str(f))
        if left_out:
            skipped[str(f)] = left_out
    text_columns, label = columns
    data = frames["train"]
    if "test" not in frames:
        in_test = hash_fraction(data, "test") < spec.test_fraction
        frames["test"], data = data[in_test], data[~in_test]
    if "validation" not in frames:
        in_val = hash_fraction(data, "validation") < spec.validation_fraction
        frames["validation"], data = data[in_val], data[~in_val]
    if spec.max_train_examples and len(data) > spec.max_train_examples:
        order = np.argsort(hash_fraction(data, "subset"), kind="stable")[:spec.max_train_examples]
        data = data.iloc[np.sort(order)]
    frames["train"] = data
    labels = sort_labels(frames["train"]["labels"])
    where = f"{train_file} (column {label!r})"
    if len(labels) < 2:
        raise LabelledDataError(f"{where}: one class only ({labels[0]!r}) in the training rows; a classifier "
                                "needs at least two")
    for role in ("validation", "test"):
        if not len(frames[role]):
            raise LabelledDataError(f"{where}: the {role} split is empty ({len(frames['train'])} training rows); "
                                    f"give more rows or a larger {role}_fraction")
        unseen = sorted(set(map(str, frames[role]["labels"])) - set(map(str, labels)))
        if unseen:
            source = test_file if role == "test" and test_file else validation_file or train_file
            raise LabelledDataError(f"{source} (column {label!r}): {role} label(s) {', '.join(map(repr, unseen))} "
                                    f"never seen in training (training labels: {', '.join(map(repr, labels))})")
    data_hash = _digest(*[frames[r].to_json(orient="values") for r in ("train", "validation", "test")])
    return LabelledTask(name=spec.task_name(), spec=spec, text_columns=text_columns, label_column=label,
                        labels=labels, train=frames["train"].reset_index(drop=True),
                        validation=frames["validation"].reset_index(drop=True),
                        test=frames["test"].reset_index(drop=True), skipped=skipped, data_hash=data_hash)


def encoder_folder(model_dir: str | Path) -> Path:
    """The folder of the encoder a classifier starts from: a model folder, or an ELECTRA output's discriminator."""
    p = Path(model_dir)
    for folder in (p, p / DISCRIMINATOR_DIR):
        if (folder / "config.json").exists() and any((folder / w).exists() for w in WEIGHT_FILES):
            return folder
    raise LabelledDataError(f"{model_dir}: no encoder to fine-tune (a folder with config.json and model weights, "
                            f"or an ELECTRA output holding {DISCRIMINATOR_DIR}/)")


_CONFIG_NOISE = ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype", "id2label",
                 "label2id", "problem_type", "finetuning_task", "_attn_implementation_autoset")


def architecture_key(model_dir: str | Path) -> str:
    """The encoder's architecture (its config without names, versions and heads) and its tokenizer's content."""
    folder = encoder_folder(model_dir)
    config = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if k not in _CONFIG_NOISE}
    return _digest(config, tokenizer_hash(folder))


def tokenizer_hash(folder: Path) -> str:
    """The tokenizer's vocabulary and pipeline (tokenizer.json without padding, truncation and decoder: they
    change no id; else the vocab files):
    the same tokenizer saved twice hashes the same."""
    tj = folder / "tokenizer.json"
    if tj.exists():
        spec = json.loads(tj.read_text(encoding="utf-8"))
        return _digest({k: v for k, v in spec.items() if k not in ("padding", "truncation", "decoder")})
    parts = [(f.name, hashlib.sha256(f.read_bytes()).hexdigest()) for f in sorted(folder.iterdir())
             if f.name in ("vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")]
    if not parts:
        raise LabelledDataError(f"{folder}: no tokenizer (tokenizer.json or vocabulary files) beside the model")
    return _digest(parts)


def default_learning_rates(model_dir: str | Path) -> tuple:
    """The learning-rate grid for the encoder of `model_dir`, by its hidden size (LEARNING_RATES_BY_WIDTH)."""
    config = json.loads((encoder_folder(model_dir) / "config.json").read_text())
    width = config.get("hidden_size") or config.get("dim") or config.get("n_embd") or 768
    return next(rates for limit, rates in LEARNING_RATES_BY_WIDTH if limit is None or width <= limit)


def fine_tune_args(task: LabelledTask, args: dict | None) -> dict:
    return {**DEFAULT_ARGS, **task.spec.args, **(args or {})}


def fit_length(encoder: Path, args: dict) -> dict:
    """max_seq_length no longer than the encoder's position table (a demo model pretrained on 64-token blocks)."""
    config = json.loads((Path(encoder) / "config.json").read_text())
    positions = config.get("max_position_embeddings") or config.get("n_positions")
    if positions and config.get("model_type") in ("roberta", "camembert", "longformer"):
        positions -= 2  # their position ids start after the padding index
    return {**args, "max_seq_length": min(args["max_seq_length"], positions)} if positions else args


Progress = Callable[[str], None]


def fine_tune_grid(model_type: str, model_dir: str, task: LabelledTask, seeds: int, learning_rates, args: dict,
                   random_init: bool = False, progress: Progress = print, arm: str = "pretrained",
                   use_cuda: bool = False) -> list[dict]:
    """Fine-tune `seeds` times at each learning rate; each run's validation and test figures."""
    from . import ClassificationModel  # noqa: PLC0415 (torch and transformers only when fine-tuning)

    runs, total, started = [], seeds * len(learning_rates), time.time()
    for i, (lr, seed) in enumerate(((lr, s) for lr in learning_rates for s in range(seeds)), 1):
        with tempfile.TemporaryDirectory(prefix="downstream-") as out:
            run_args = {**args, "learning_rate": float(lr), "manual_seed": seed, "output_dir": out,
                        "overwrite_output_dir": True, "labels_list": list(task.labels), "silent": True,
                        "no_save": True, "save_model_every_epoch": False, "save_eval_checkpoints": False,
                        "save_steps": -1, "evaluate_during_training": False, "use_multiprocessing": False,
                        **({"random_init": True} if random_init else {})}
            model = ClassificationModel(model_type, str(model_dir), num_labels=len(task.labels), args=run_args,
                                        use_cuda=use_cuda)
            model.train_model(task.train, output_dir=out)
            val, test = (_figures(model.eval_model(df)[0]) for df in (task.validation, task.test))
            del model
        runs.append({"seed": seed, "learning_rate": float(lr), "validation": val, "test": test})
        so_far = [r["test"]["accuracy"] for r in runs if r["learning_rate"] == float(lr)]
        progress(f"downstream {task.name} {arm}: seed {seed + 1}/{seeds}, lr {lr:g} ({i}/{total}): validation "
                 f"accuracy {val['accuracy']:.4f}, test accuracy {test['accuracy']:.4f} (mean so far at this lr "
                 f"{np.mean(so_far):.4f}), {time.time() - started:.0f}s")
    return runs


def _figures(result: dict) -> dict:
    return {k: float(result[k]) for k in (*METRICS, "eval_loss") if k in result}


def best_learning_rate(runs: list[dict], metric: str = "accuracy") -> float:
    """The rate with the best mean *validation* `metric` over seeds (ties: the lower validation loss, then the
    earlier rate in the grid). The test split plays no part."""
    order = list(dict.fromkeys(r["learning_rate"] for r in runs))

    def score(lr):
        at = [r["validation"] for r in runs if r["learning_rate"] == lr]
        return (np.mean([v[metric] for v in at]), -np.mean([v.get("eval_loss", 0.0) for v in at]), -order.index(lr))

    return max(order, key=score)


def summarise(runs: list[dict], learning_rate: float | None = None) -> dict:
    """Mean and standard deviation (over seeds; sample std, 0 for one seed) of the test figures at
    `learning_rate` (default: the best on validation), and that rate's validation accuracy."""
    lr = best_learning_rate(runs) if learning_rate is None else learning_rate
    at = [r for r in runs if r["learning_rate"] == lr]
    out: dict = {"learning_rate": lr, "seeds": len(at)}
    for m in METRICS:
        values = [r["test"][m] for r in at if m in r["test"]]
        out[m] = float(np.mean(values))
        out[f"{m}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out["validation_accuracy"] = float(np.mean([r["validation"]["accuracy"] for r in at]))
    return out


def pooled_std(a: float, b: float) -> float:
    """The pooled standard deviation of two figures measured with the same number of seeds."""
    return math.sqrt((a * a + b * b) / 2)


def random_init_baseline(model_type: str, model_dir: str, task: LabelledTask, seeds: int, learning_rates,
                         args: dict, cache_dir: str | Path | None, progress: Progress = print,
                         use_cuda: bool = False) -> tuple[list[dict], bool, str]:
    """The random-initialisation arm: the same architecture and tokenizer with fresh weights, fine-tuned over the
    same grid; cached under `cache_dir` by (architecture, tokenizer, task data, settings, seeds, grid), so many
    pretraining runs of one architecture pay for it once. Returns (runs, served from the cache, key)."""
    key = _digest("random-init", architecture_key(model_dir), task.key(seeds, learning_rates, args))
    path = Path(cache_dir) / f"{key[:32]}.json" if cache_dir else None
    if path is not None and path.exists():
        progress(f"downstream {task.name} random-init: cached ({path})")
        return json.loads(path.read_text())["runs"], True, key
    runs = fine_tune_grid(model_type, model_dir, task, seeds, learning_rates, args, random_init=True,
                          progress=progress, arm="random-init", use_cuda=use_cuda)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "task": task.summary(), "seeds": seeds,
                                   "learning_rates": list(learning_rates), "args": fine_tune_args(task, args),
                                   "runs": runs}, indent=1, default=str))
        os.replace(tmp, path)
    return runs, False, key


def compare(model_type: str, model_dir: str, task: LabelledTask, seeds: int = DEFAULT_SEEDS,
            learning_rates=None, args: dict | None = None, cache_dir: str | Path | None = None,
            progress: Progress = print, use_cuda: bool = False) -> dict:
    """The pretrained model (an ELECTRA output: its discriminator) and its random-init twin fine-tuned on `task`,
    each reported at its own best learning rate on validation; `gain` = pretrained - random-init test accuracy.
    learning_rates: default by the encoder's width (`default_learning_rates`)."""
    encoder = encoder_folder(model_dir)
    learning_rates = list(learning_rates or default_learning_rates(encoder))
    args = fine_tune_args(task, args)
    task_key = task.key(seeds, learning_rates, args)
    args = fit_length(encoder, args)
    pretrained = fine_tune_grid(model_type, str(encoder), task, seeds, learning_rates, args, progress=progress,
                                use_cuda=use_cuda)
    baseline, cached, key = random_init_baseline(model_type, str(encoder), task, seeds, learning_rates, args,
                                                 cache_dir, progress, use_cuda)
    ours, theirs = summarise(pretrained), summarise(baseline)
    return {"task": task.name, "task_key": task_key, "random_init_key": key,
            "pretrained": {**ours, "runs": pretrained}, "random_init": {**theirs, "runs": baseline, "cached": cached},
            "gain": ours["accuracy"] - theirs["accuracy"], "summary": task.summary()}
