"""The run spec: everything one engine run needs, as one typed record. The pipeline's launcher writes it and
`python -m lmcore train --spec FILE` (on every rank under torchrun) reads it, so both sides agree on its fields."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .models.args import ArgsError
from .base.atomic import write_text


@dataclass
class RunSpec:
    model_type: str
    """bert, camembert, distilbert, electra, gpt2, longformer, openai-gpt or roberta."""
    model_name: str | None = None
    """None to train from scratch, or a saved model folder / checkpoint / cached hub name."""
    train_files: list[str] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)
    output_dir: str | None = None
    """Overrides args["output_dir"]."""
    args: dict = field(default_factory=dict)
    """LanguageModelingArgs fields."""
    generator_name: str | None = None
    discriminator_name: str | None = None
    result_file: str | None = None
    """Where rank 0 writes the run's result (global_step, tokens_seen and the eval result) as JSON."""
    final_eval: bool = True
    """Evaluate on eval_files once training ends (False: eval_files serve evaluate_during_training only; the
    pipeline scores every model in its evaluate stage instead)."""
    file_hashes: dict = field(default_factory=dict)
    """{path: [size, mtime_ns, sha256]} the launcher already computed (lmcore.data.corpus.known_file_hashes): the
    processes skip re-reading the corpus to hash it."""

    on_evaluation: dict | None = None
    """{"hook": "package.module:factory", "kwargs": {...}}: `factory(**kwargs)` (imported and called on the main
    process; the others share its answer) returns the callable `train_model` hands each evaluation to
    (lmcore.training.train.TrainSetup): how a sweep reports a trial's evaluations and stops it when it is clearly
    behind."""

    @classmethod
    def from_dict(cls, values: dict) -> "RunSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ArgsError(f"run spec: unknown field(s) {', '.join(map(repr, unknown))}; known: "
                            f"{', '.join(sorted(known))}")
        if not values.get("model_type"):
            raise ArgsError("run spec: model_type is required")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "RunSpec":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ArgsError(f"run spec {path}: cannot be read as JSON ({e})") from None
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2))
