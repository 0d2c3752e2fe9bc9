"""`ClassificationArgs`: every setting of a sequence-classification run (Simple Transformers' names).

The settings a classification run shares with a language-modeling run (optimizer, schedule, batches, saving,
evaluating, precision: Simple Transformers' `ModelArgs`, plus a few of lmcore's own) are the very fields of
`LanguageModelingArgs`, taken from there with their defaults and docstrings; `ClassificationFields` below adds
what only classification has. Every name of Simple Transformers' ClassificationArgs is accepted; what each does
here (honoured, inert with one warning, refused with the reason) is listed in `lmcore.models.compat`
(CLASSIFICATION_INERT, CLASSIFICATION_REFUSED).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .args import LanguageModelingArgs, Settings, field_docs
from .compat import MODEL_ARGS_FIELDS

LMCORE_SHARED_FIELDS = ("max_steps", "mixed_precision", "compile", "save_total_limit", "resume_from_checkpoint",
                        "strict_utf8", "text_column", "dataset_split", "dataset_config", "dataset_cache_dir",
                        "special_tokens_list")
"""LanguageModelingArgs fields beyond Simple Transformers' ModelArgs that a classification run honours too."""
SHARED_FIELDS = MODEL_ARGS_FIELDS + LMCORE_SHARED_FIELDS
LABEL_COLUMNS = ("labels", "label")
"""Where labels are found when `label_column` is None: Simple Transformers' `labels`, then Hugging Face's `label`."""


@dataclass
class ClassificationFields(Settings):
    """The settings only a classification run has (the shared ones are added by `ClassificationArgs`)."""

    labels_list: list = field(default_factory=list)
    """The labels, in the order of their ids (strings, or any values). Empty: integer labels are their own ids;
    string labels get ids in sorted order, found in the training data. Saved into the model's config as
    id2label / label2id, so `pipeline("text-classification")` answers with these names."""
    labels_map: dict = field(default_factory=dict)
    """label -> id. Empty: built from `labels_list` (the i-th label gets id i). When given, its keys must be the
    labels of `labels_list`."""
    regression: bool = False
    """A real-valued target (num_labels=1): mean squared error as the loss, Pearson and Spearman correlations
    beside eval_loss (the MSE) in the results."""
    label_column: str | None = None
    """The column (JSON field, CSV header name) holding the labels of a DataFrame or file. None: `labels`, else
    `label`."""
    random_init: bool = False
    """Keep the architecture (config) and tokenizer of `model_name` but initialise every weight afresh from the
    seed: the random-initialisation baseline a pretrained model is compared with."""
    model_class: str = "ClassificationModel"
    """Simple Transformers' record of the model class; informational."""
    sliding_window: bool = False
    """Not provided (refused): Simple Transformers' windows over long texts with a majority vote. Texts are cut to
    `max_seq_length` tokens."""
    stride: float = 0.8
    """Inert: only used with `sliding_window`."""
    tie_value: int = 1
    """Inert: only used with `sliding_window`."""
    onnx: bool = False
    """Not provided (refused): ONNX export and ONNX Runtime inference."""
    lazy_loading: bool = False
    """Inert: labelled rows are tokenized once into compact arrays; a file is read by its container."""
    lazy_delimiter: str = "\t"
    """Inert: see `lazy_loading` (a .tsv file is read with its header row)."""
    lazy_labels_column: int = 1
    """Inert: see `lazy_loading` (columns are named by `label_column`)."""
    lazy_loading_start_line: int = 1
    """Inert: see `lazy_loading`."""
    lazy_text_a_column: Any = None
    """Inert: see `lazy_loading` (pairs are the `text_a` / `text_b` columns)."""
    lazy_text_b_column: Any = None
    """Inert: see `lazy_loading`."""
    lazy_text_column: int = 0
    """Inert: see `lazy_loading` (the text is the `text_column` column)."""

    def own_problems(self) -> list[str]:
        p = []
        labels = list(self.labels_list or [])
        if len(set(map(repr, labels))) != len(labels):
            p.append(f"labels_list={labels!r}: holds a label twice")
        if self.labels_map and labels and set(self.labels_map) != set(labels) and \
                {str(k) for k in self.labels_map} != {str(k) for k in labels}:
            p.append(f"labels_map keys {sorted(map(str, self.labels_map))} are not the labels of labels_list "
                     f"{labels!r}")
        if self.labels_map and sorted(self.labels_map.values()) != list(range(len(self.labels_map))):
            p.append(f"labels_map={self.labels_map!r}: its ids must be 0 .. {len(self.labels_map) - 1}, each once")
        if self.regression and len(labels) > 1:
            p.append(f"regression=True predicts one number; labels_list={labels!r} is for classes")
        if self.label_column is not None and (not isinstance(self.label_column, str) or not self.label_column):
            p.append(f"label_column={self.label_column!r}: must be None or a column name")
        return p

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Field name -> docstring, for every field (the shared ones documented in LanguageModelingArgs)."""
        shared = field_docs(LanguageModelingArgs)
        return {**{k: shared[k] for k in SHARED_FIELDS if k in shared}, **field_docs(ClassificationFields)}


def _shared_field_specs() -> list[tuple]:
    """(name, type, field) of each shared LanguageModelingArgs field, with its default."""
    by_name = {f.name: f for f in dataclasses.fields(LanguageModelingArgs)}
    own = {f.name for f in dataclasses.fields(ClassificationFields)}
    specs = []
    for name in SHARED_FIELDS:
        if name in own:
            continue
        f = by_name[name]
        copy = field(default_factory=f.default_factory) if f.default_factory is not dataclasses.MISSING \
            else field(default=f.default)
        specs.append((name, f.type, copy))
    return specs


ClassificationArgs = dataclasses.make_dataclass(
    "ClassificationArgs", _shared_field_specs(), bases=(ClassificationFields,),
    namespace={"__doc__": "Every setting of a ClassificationModel: Simple Transformers' ClassificationArgs names "
                          "(see lmcore.models.classification_args).", "__module__": __name__})
