"""lmcore: train BERT-, RoBERTa-, GPT-2- and ELECTRA-style language models from scratch or fine-tune them.

    from lmcore import LanguageModelingModel, LanguageModelingArgs
"""

from .args import ArgsError, LanguageModelingArgs
from .corpus import CorpusError
from .generate import GenerationArgs
from .hub import ModelNotFoundError
from .model import LanguageModelingModel
from .train import NonFiniteLossError

__all__ = ["LanguageModelingModel", "LanguageModelingArgs", "GenerationArgs", "ArgsError", "CorpusError", "ModelNotFoundError",
           "NonFiniteLossError"]
__version__ = "0.1.0"
