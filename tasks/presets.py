"""Named settings a run starts from (`preset`), and the rule that puts a user's `args` over them.

Prefect replaces a whole dict parameter, so a deployment cannot keep its defaults as the value of `args`: one
`{"text_column": "content"}` would throw the small model away and train a BERT-base. The defaults live here,
under a name the deployments pass as the `preset` parameter, and the flow merges the user's `args` over them key by
key (`config`, `generator_config` and `discriminator_config` key by key too). `none` starts from the engine's own
defaults (lmcore.LanguageModelingArgs).

A preset has two parts: training settings (steps, batch, learning rate, checkpoints), used by every run, and the
model's shape (vocabulary and `config`), used only by a run that builds a model from scratch; a run that continues
a saved model keeps that model's shape and takes the preset's gentler continuing settings instead.

ELECTRA: `config` describes the discriminator. The pipeline hands it to the engine as `discriminator_config` (with
no `generator_config` the engine makes the generator a quarter of the discriminator's width, as in the paper), and
says so in the flow log; `config` and `discriminator_config` given together are refused, naming both.
"""

from __future__ import annotations

from typing import Literal

from lmcore import ArgsError

PresetName = Literal["demo", "small", "base", "none"]
"""The presets (for Prefect's parameter validation: another name is refused listing these)."""

_WIDTH = {  # the four numbers of a transformer's shape, in each config class's own field names
    "bert": ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
    "distilbert": ("dim", "n_layers", "n_heads", "hidden_dim"),
    "gpt2": ("n_embd", "n_layer", "n_head", "n_inner"),
    "openai-gpt": ("n_embd", "n_layer", "n_head", None),  # its feed-forward is always 4 x n_embd
}
_CAUSAL = ("gpt2", "openai-gpt")

PRESETS = {
    # A small model on the bundled corpus: about a minute on two CPU cores (README, "How long it takes").
    "demo": {"training": {"max_seq_length": 64, "train_batch_size": 16, "max_steps": 150, "learning_rate": 1e-3,
                          "warmup_ratio": 0.1, "save_steps": 50, "save_total_limit": 1, "logging_steps": 10},
             "shape": {"vocab_size": 2000, "width": (64, 2, 2, 128)},
             "continuing": {"max_steps": 100, "learning_rate": 5e-4, "warmup_ratio": 0.0}},
    # BERT-mini's shape (4 layers, 256 wide): a first real model of a corpus of a few hundred MB, hours on a CPU.
    "small": {"training": {"max_seq_length": 128, "train_batch_size": 32, "max_steps": 20000,
                           "learning_rate": 5e-4, "warmup_ratio": 0.06, "save_steps": 1000, "save_total_limit": 2,
                           "logging_steps": 50},
              "shape": {"vocab_size": 8000, "width": (256, 4, 4, 1024)},
              "continuing": {"max_steps": 2000, "learning_rate": 1e-4, "warmup_ratio": 0.0}},
    # BERT-base's shape (12 layers, 768 wide, 30k vocabulary): for GPUs. Batch per process; the paper's 256 is
    # 8 processes of 32.
    "base": {"training": {"max_seq_length": 512, "train_batch_size": 32, "max_steps": 100000,
                          "learning_rate": 1e-4, "warmup_steps": 10000, "save_steps": 5000, "save_total_limit": 3,
                          "logging_steps": 100},
             "shape": {"vocab_size": 30000, "width": (768, 12, 12, 3072)},
             "continuing": {"max_steps": 10000, "learning_rate": 5e-5, "warmup_steps": 1000}},
    "none": {"training": {}, "shape": {}, "continuing": {}},
}


def model_config(model_type: str, width: tuple) -> dict:
    """The shape (hidden, layers, heads, feed-forward) in `model_type`'s config field names."""
    names = _WIDTH.get(model_type, _WIDTH["bert"])
    config = {name: value for name, value in zip(names, width) if name}
    if model_type == "electra":
        config["embedding_size"] = width[0]  # ElectraConfig's default (128) would outgrow a demo-size model
    if model_type == "longformer":
        config["attention_window"] = min(512, 2 * width[0])  # its default pads every block to 512 positions
    return config


def preset_args(name: str, model_type: str | None, from_saved: bool) -> dict:
    """The settings of preset `name` for a run of `model_type`; `from_saved`: the run continues a saved model
    (the preset's continuing settings, not its shape). model_type None: the settings every type shares."""
    if name not in PRESETS:
        raise ArgsError(f"preset={name!r}: choose one of {', '.join(PRESETS)} (none: the engine's defaults)")
    preset = PRESETS[name]
    out = dict(preset["training"])
    if from_saved:
        out.update(preset["continuing"])
    elif preset["shape"]:
        out["vocab_size"] = preset["shape"]["vocab_size"]
        if model_type:
            out["config"] = model_config(model_type, preset["shape"]["width"])
    if model_type in _CAUSAL and name != "none":
        out["mlm"] = False  # a causal model has no masked-LM head
    if "warmup_steps" in out and "warmup_ratio" in out and not out["warmup_ratio"]:
        del out["warmup_ratio"]
    return out


def merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, key by key; a dict (a config) merges into the dict it meets, key by key."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def effective_args(preset: str, args: dict | None, model_type: str | None,
                   from_saved: bool = False) -> tuple[dict, list[str]]:
    """(the settings the run uses: `args` merged over the preset, what to tell the user about them)."""
    if not isinstance(args, (dict, type(None))):
        raise ArgsError(f"args: must be a dict of LanguageModelingArgs fields, not {type(args).__name__}")
    given = dict(args or {})
    out = merge(preset_args(preset, model_type, from_saved), given)
    notes = [f"settings: preset {preset!r}" + (f" with args {sorted(given)} over it" if given else "")]
    if model_type == "electra":
        out, electra_notes = electra_shape(out, given)
        notes += electra_notes
    return out, notes


def electra_shape(args: dict, given: dict) -> tuple[dict, list[str]]:
    """ELECTRA's `config` is the discriminator's: handed on as `discriminator_config` (the preset's `config` under
    the user's `discriminator_config`), never dropped; both given by the user is ambiguous and refused."""
    if "config" in given and "discriminator_config" in given:
        raise ArgsError("args.config and args.discriminator_config: both set the ELECTRA discriminator; give one "
                        "(config is taken as the discriminator's, with the generator a quarter of its width, or "
                        "set discriminator_config and generator_config)")
    out, notes = dict(args), []
    config = out.pop("config", None)
    if config:
        out["discriminator_config"] = merge(config, out.get("discriminator_config") or {})
        origin = "args.config" if "config" in given else "the preset's config"
        notes.append(f"ELECTRA: {origin} is the discriminator's (discriminator_config: hidden "
                     f"{out['discriminator_config'].get('hidden_size', 256)})")
    disc = out.get("discriminator_config") or {}
    if out.get("generator_config"):
        notes.append(f"ELECTRA: generator from args.generator_config (hidden "
                     f"{out['generator_config'].get('hidden_size', 256)})")
    else:
        notes.append(f"ELECTRA: no generator_config, so the generator is a quarter of the discriminator's width "
                     f"(hidden {max(1, disc.get('hidden_size', 256) // 4)})")
    return out, notes


def describe() -> str:
    """The presets, one line each (for --help and the README)."""
    lines = []
    for name, p in PRESETS.items():
        if name == "none":
            lines.append("none: the engine's own defaults (LanguageModelingArgs)")
            continue
        t, (hidden, layers, heads, ffn) = p["training"], p["shape"]["width"]
        lines.append(f"{name}: hidden {hidden}, {layers} layers, {heads} heads, vocabulary {p['shape']['vocab_size']}"
                     f"; {t['max_steps']} steps of {t['train_batch_size']} x {t['max_seq_length']} tokens, "
                     f"learning rate {t['learning_rate']:g} (continuing a saved model: "
                     f"{p['continuing']['max_steps']} steps, {p['continuing']['learning_rate']:g})")
    return "\n".join(lines)


def settle(preset: str, args: dict | None, model_type: str | None, from_saved: bool,
           run_id: str | None = None) -> dict:
    """The run's effective settings (`args` over `preset`), said in the flow log and recorded whole on the MLflow
    run `run_id`: the `preset` param and the artifact effective_args.json (preset, what was given, what is used),
    so two runs compare on what they really used (the flow logs the same settings as `args.*` params)."""
    from . import tracking
    from .common import logger

    effective, notes = effective_args(preset, args, model_type, from_saved)
    for note in notes:
        logger().info("%s", note)
    if run_id:
        tracking.log_params(run_id, {"preset": preset})
        tracking.client().log_dict(run_id, {"preset": preset, "model_type": model_type,
                                            "continues_saved_model": from_saved, "given": dict(args or {}),
                                            "effective": effective}, "effective_args.json")
    return effective
