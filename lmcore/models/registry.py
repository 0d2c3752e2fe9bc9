"""model_type -> the classes that implement it. Adding a model type is one entry in MODEL_TYPES."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import transformers as hf


@dataclass(frozen=True)
class ModelType:
    name: str
    config_cls: type
    mlm_cls: type | None
    """Model class with a masked-LM head (None: the type cannot do MLM)."""
    clm_cls: type | None
    """Model class with a causal-LM head (None: the type cannot do CLM)."""
    tokenizer_cls: type
    """Fast tokenizer class; trained from scratch with the same normalizer and pre-tokenizer it loads with."""
    tokenizer_kind: str
    """What a from-scratch tokenizer is: wordpiece, byte-level-bpe, unigram, bpe."""
    masked_head: Callable | None = None
    """(model, hidden (N, H)) -> logits (N, V): the MLM head alone, so training scores only the masked positions
    (about 15% of them) instead of projecting every position onto the whole vocabulary."""
    family: str = "single"
    """How the type is built, trained and saved (lmcore.models.families): "single" (one Hugging Face model) or
    "electra" (the generator + discriminator pair)."""
    classifier_cls: type | None = None
    """Model class with a sequence-classification head (ClassificationModel)."""
    positions_field: str = "max_position_embeddings"
    position_offset: int = 0
    """Positions the model reserves beyond its tokens (RoBERTa-style models start positions at padding_idx + 1)."""

    def model_cls(self, mlm: bool) -> type:
        cls = self.mlm_cls if mlm else self.clm_cls
        if cls is None:
            want, have = ("mlm=True (masked LM)", "mlm=False") if mlm else ("mlm=False (causal LM)", "mlm=True")
            raise ValueError(f"model_type {self.name!r} has no head for {want}: set {have}")
        return cls


def _bert_head(model, hidden):
    return model.cls(hidden)


def _roberta_head(model, hidden):  # RoBERTa, CamemBERT, Longformer
    return model.lm_head(hidden)


def _distilbert_head(model, hidden):
    hidden = model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))
    return model.vocab_projector(hidden)


def electra_generator_head(model, hidden):
    return model.generator_lm_head(model.generator_predictions(hidden))


MODEL_TYPES: dict[str, ModelType] = {
    t.name: t
    for t in (
        ModelType("bert", hf.BertConfig, hf.BertForMaskedLM, None, hf.BertTokenizerFast, "wordpiece",
                  masked_head=_bert_head,
                  classifier_cls=hf.BertForSequenceClassification),
        ModelType("distilbert", hf.DistilBertConfig, hf.DistilBertForMaskedLM, None, hf.DistilBertTokenizerFast,
                  "wordpiece", masked_head=_distilbert_head,
                  classifier_cls=hf.DistilBertForSequenceClassification),
        ModelType("camembert", hf.CamembertConfig, hf.CamembertForMaskedLM, None, hf.CamembertTokenizerFast,
                  "unigram", masked_head=_roberta_head, position_offset=2,
                  classifier_cls=hf.CamembertForSequenceClassification),
        ModelType("roberta", hf.RobertaConfig, hf.RobertaForMaskedLM, None, hf.RobertaTokenizerFast,
                  "byte-level-bpe", masked_head=_roberta_head, position_offset=2,
                  classifier_cls=hf.RobertaForSequenceClassification),
        ModelType("longformer", hf.LongformerConfig, hf.LongformerForMaskedLM, None, hf.LongformerTokenizerFast,
                  "byte-level-bpe", masked_head=_roberta_head, position_offset=2,
                  classifier_cls=hf.LongformerForSequenceClassification),
        ModelType("gpt2", hf.GPT2Config, None, hf.GPT2LMHeadModel, hf.GPT2TokenizerFast, "byte-level-bpe",
                  positions_field="n_positions",
                  classifier_cls=hf.GPT2ForSequenceClassification),
        ModelType("openai-gpt", hf.OpenAIGPTConfig, None, hf.OpenAIGPTLMHeadModel, hf.OpenAIGPTTokenizerFast, "bpe",
                  positions_field="n_positions",
                  classifier_cls=hf.OpenAIGPTForSequenceClassification),
        ModelType("electra", hf.ElectraConfig, hf.ElectraForMaskedLM, None, hf.ElectraTokenizerFast, "wordpiece",
                  masked_head=electra_generator_head, family="electra",
                  classifier_cls=hf.ElectraForSequenceClassification),
    )
}


def get_model_type(name: str) -> ModelType:
    try:
        return MODEL_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown model_type {name!r}: choose one of {', '.join(sorted(MODEL_TYPES))}") from None
