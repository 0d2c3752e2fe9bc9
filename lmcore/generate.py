"""Text generation from a causal language model: `LanguageModelingModel.predict` and its `GenerationArgs`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass
class GenerationArgs:
    """How `predict` continues each prompt (the field names Simple Transformers uses; each one is passed to
    transformers' `generate`)."""

    max_length: int = 20
    """Longest output in tokens, prompt included (max_new_tokens, when set, takes precedence)."""
    max_new_tokens: int | None = None
    """Tokens to generate after the prompt."""
    min_length: int = 0
    """Shortest output in tokens, prompt included."""
    min_new_tokens: int | None = None
    """Fewest tokens to generate after the prompt."""
    early_stopping: bool = False
    """Beam search stops as soon as num_beams finished candidates exist."""
    max_time: float | None = None
    """Stop generating after this many seconds."""
    do_sample: bool = False
    """Sample the next token (True) or take the most likely one (greedy / beam search)."""
    num_beams: int = 1
    """Beams of beam search (1: no beam search)."""
    num_beam_groups: int = 1
    """Groups of beams for diverse beam search."""
    penalty_alpha: float | None = None
    """Degeneration penalty of contrastive search."""
    use_cache: bool = True
    """Reuse the attention keys and values of earlier positions (faster)."""
    temperature: float = 1.0
    """Sampling temperature (lower: more conservative)."""
    top_k: int = 50
    """Sample among the k most likely tokens."""
    top_p: float = 1.0
    """Sample among the most likely tokens whose probabilities add up to top_p."""
    repetition_penalty: float = 1.0
    """Penalty for tokens already generated (1.0: none)."""
    diversity_penalty: float = 0.0
    """Diverse beam search: penalty for a token another group chose at the same step."""

    def get_dict(self) -> dict:
        """The settings that are set (None dropped), as keyword arguments."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _generate_kwargs(args: GenerationArgs, extra: dict) -> dict:
    """Keyword arguments for `generate`: every setting that differs from transformers' own default (passing a
    default sampling setting without sampling only makes transformers warn), then the caller's extras."""
    from transformers import GenerationConfig

    library = GenerationConfig()
    out = {k: v for k, v in args.get_dict().items() if getattr(library, k, object()) != v}
    out.update(extra)
    return out


@torch.no_grad()
def generate_text(model, tokenizer, prompts: list[str], args: GenerationArgs, batch_size: int, device,
                  skip_special_tokens: bool, **extra) -> tuple[list[str], list]:
    """Continue each prompt; returns (the generated continuations as text, the raw `generate` outputs per batch).
    Prompts are padded on the left so every continuation starts right after its own prompt."""
    if isinstance(prompts, str):
        prompts = [prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = _generate_kwargs(args, extra)
    kwargs.setdefault("pad_token_id", pad_id)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    if tokenizer.pad_token_id is None and pad_id is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
    was_training = model.training
    model.eval()
    texts, outputs = [], []
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[start:start + batch_size]), padding=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            out = model.generate(**enc, return_dict_in_generate=True, **kwargs)
            width = enc["input_ids"].shape[1]
            per_prompt = out.sequences.shape[0] // enc["input_ids"].shape[0]
            texts.extend(tokenizer.decode(seq[width:], skip_special_tokens=skip_special_tokens)
                         for seq in out.sequences)
            outputs.append(out)
            assert per_prompt >= 1
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return texts, outputs
