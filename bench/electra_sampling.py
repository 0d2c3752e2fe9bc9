"""How much of an ELECTRA training step goes into drawing the generator's replacements, at BERT-base shapes.

    .venv/bin/python bench/electra_sampling.py [--steps 3] [--precision auto|no] [--batch 8] [--block 512]

Discriminator hidden 768, 12 layers, 12 heads, FFN 3072; generator a quarter of its width (hidden 192, 3 heads,
FFN 768, same depth); vocabulary 30,522; block 512, batch 8. One training step = the engine's prepare (masks on
the host) + forward + backward through `ElectraObjective`, timed whole, with the replacement draw
(`lmcore.objectives.electra.sample_tokens`: softmax, cumulative sum, one uniform per masked position) timed inside it.
For comparison, the draw this replaced: Gumbel noise for every (masked position x vocabulary) cell drawn on the host,
then argmax over logits + noise, timed on the same shapes. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import transformers as hf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lmcore.models import families
from lmcore.objectives import electra
from lmcore.training import hardware, precision  # noqa: E402
from lmcore.base.host import to_device  # noqa: E402

VOCAB = 30522


def pair() -> families.ElectraPair:
    disc = hf.ElectraConfig(vocab_size=VOCAB, embedding_size=768, hidden_size=768, num_hidden_layers=12,
                            num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    gen = families.generator_config_for(disc, {}, tie=True)
    return families.ElectraPair(hf.ElectraForMaskedLM(gen), hf.ElectraForPreTraining(disc), tie=True)


class Tokenizer:
    """The few tokenizer facts the objective reads (BERT's special ids)."""

    mask_token_id, all_special_ids = 103, [0, 100, 101, 102, 103]

    def __len__(self) -> int:
        return VOCAB


def gumbel_draw(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The previous way: an (N, V) Gumbel noise matrix from a host generator, added to the logits, argmax."""
    u = torch.rand(logits.shape, generator=generator).clamp_(1e-9, 1.0 - 1e-9)
    return (logits.float() + (-torch.log(-torch.log(u)))).argmax(dim=-1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--block", type=int, default=512)
    ns = p.parse_args()
    torch.manual_seed(0)
    model, objective = pair(), electra.ElectraObjective(Tokenizer(), 0.15, 50.0)
    device = torch.device("cpu")
    run_precision = precision.resolve(device, ns.precision)
    hardware.choose_attention(model, run_precision)
    ids = torch.randint(1000, VOCAB, (ns.batch, ns.block))
    ids[:, 0], ids[:, -1] = 101, 102
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "index": torch.arange(ns.batch)}
    draw_s, real = [], electra.sample_tokens

    def timed(logits, uniforms):
        start = time.perf_counter()
        out = real(logits, uniforms)
        draw_s.append(time.perf_counter() - start)
        return out

    families.sample_tokens = timed
    steps = []
    for step in range(ns.steps):
        start = time.perf_counter()
        prepared = to_device(objective.prepare(batch, lambda i: torch.Generator().manual_seed(step * 1000 + i)),
                             device)
        with run_precision.autocast():
            sums = objective.loss_sums(model, prepared)
        (sums["generator"] / prepared["counts"]["generator"]
         + 50.0 * sums["discriminator"] / prepared["counts"]["discriminator"]).backward()
        model.zero_grad(set_to_none=True)
        steps.append(time.perf_counter() - start)
    masked = prepared["counts"]["generator"]
    logits = torch.randn(masked, VOCAB)
    g = torch.Generator().manual_seed(0)
    old = []
    for _ in range(3):
        start = time.perf_counter()
        gumbel_draw(logits, g)
        old.append(time.perf_counter() - start)
    step_s, draw = min(steps[1:] or steps), min(draw_s[1:] or draw_s)
    print(json.dumps({"batch": ns.batch, "block": ns.block, "vocab": VOCAB, "masked_positions": masked,
                      "precision": ns.precision, "step_s": round(step_s, 3), "draw_s": round(draw, 4),
                      "draw_share": round(draw / step_s, 4), "gumbel_draw_s": round(min(old), 4),
                      "gumbel_share_of_step": round(min(old) / step_s, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
