"""lmcore: train BERT-, RoBERTa-, GPT-2- and ELECTRA-style language models from scratch or fine-tune them.

    from lmcore import LanguageModelingModel, LanguageModelingArgs
    from lmcore import ClassificationModel, ClassificationArgs      # fine-tune a sequence classifier

The names below are imported on first use (PEP 562), so `python -m lmcore --help` and the pipeline's light
modules do not pay for torch and transformers until they train or evaluate.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LanguageModelingModel": ".model",
    "LanguageModelingArgs": ".models.args",
    "ClassificationModel": ".classification",
    "ClassificationArgs": ".models.classification_args",
    "GenerationArgs": ".generate",
    "ArgsError": ".models.args",
    "CorpusError": ".data.corpus",
    "ModelNotFoundError": ".models.hub",
    "NonFiniteLossError": ".training.train",
}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
