"""FLOPs per trained token: the model's (the numerator of model FLOPs utilisation, MFU) and what a peer actually
executes (the numerator of hardware FLOPs utilisation, HFU; lmcore's own is counted by its worker, `flops` job).

    flops/token = 6 · (N + d_head · V) + 12 · L · T · d        summed over both models for ELECTRA

N: parameters outside the embedding tables (every weight a token's forward pass multiplies by: attention, FFN,
LayerNorms, the MLM head's transform, ELECTRA's embedding projection and discriminator head); d_head · V: the
LM head's output projection (tied to the embedding table, so not in N, but a full matmul over every position as
the Hugging Face heads compute it); 12 · L · T · d: attention scores and weighted values (2 · T · d each per layer
forward, × 3 for forward + backward), T the block length, d the hidden width. 6 = 2 (multiply-add) × 3 (forward
+ backward). Causal attention is counted in full, as PaLM's MFU does.
"""

from __future__ import annotations

from bench.common import BLOCK, VOCAB, Setup

_EMBEDDING_TABLES = ("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                     "wte.weight", "wpe.weight")


def _one(model, layers: int, hidden: int, head_width: int | None) -> float:
    n = sum(p.numel() for name, p in model.named_parameters() if not name.endswith(_EMBEDDING_TABLES))
    head = head_width * VOCAB if head_width else 0
    return 6 * (n + head) + 12 * layers * BLOCK * hidden


def flops_per_token(setup: Setup) -> float:
    import transformers as hf

    c = setup.config
    if setup.model_type == "bert":
        model = hf.BertForMaskedLM(hf.BertConfig(vocab_size=VOCAB, **c))
        return _one(model, c["num_hidden_layers"], c["hidden_size"], c["hidden_size"])
    if setup.model_type == "gpt2":
        model = hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, **c))
        return _one(model, c["n_layer"], c["n_embd"], c["n_embd"])
    g = setup.generator_config
    disc = hf.ElectraForPreTraining(hf.ElectraConfig(vocab_size=VOCAB, **c))
    gen = hf.ElectraForMaskedLM(hf.ElectraConfig(vocab_size=VOCAB, **g))
    return (_one(disc, c["num_hidden_layers"], c["hidden_size"], None)
            + _one(gen, g["num_hidden_layers"], g["hidden_size"], g.get("embedding_size", g["hidden_size"])))


def hf_executed_flops_per_token(setup: Setup) -> float:
    """FLOPs the peers (the Trainer, Simple Transformers) execute per position of a training step, counted by
    torch's FLOP counter over a forward and backward pass of the Hugging Face models on one block of 128: their
    heads project every position onto the vocabulary (ELECTRA: the generator at every position, then the
    discriminator), so this is close to the model FLOPs above (the formula's attention term is the same)."""
    import torch
    import transformers as hf
    from torch.utils.flop_counter import FlopCounterMode

    c = setup.config
    ids = torch.randint(5, VOCAB, (1, BLOCK), generator=torch.Generator().manual_seed(0))
    if setup.model_type == "bert":
        models = [hf.BertForMaskedLM(hf.BertConfig(vocab_size=VOCAB, **c))]
    elif setup.model_type == "gpt2":
        models = [hf.GPT2LMHeadModel(hf.GPT2Config(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, **c))]
    else:
        models = [hf.ElectraForMaskedLM(hf.ElectraConfig(vocab_size=VOCAB, **setup.generator_config)),
                  hf.ElectraForPreTraining(hf.ElectraConfig(vocab_size=VOCAB, **c))]
    with FlopCounterMode(display=False) as counter:
        for model in models:
            labels = ids.clone() if not isinstance(model, hf.ElectraForPreTraining) else torch.zeros_like(ids)
            model(input_ids=ids, labels=labels).loss.backward()
    return counter.get_total_flops() / BLOCK
