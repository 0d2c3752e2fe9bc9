"""Settings a run starts from (tasks/presets.py): a user's args merged over the named preset key by key, config
dicts too; each model type's demo shape is one its config class knows; ELECTRA's `config` becomes the
discriminator's (never dropped), and config + discriminator_config is refused naming both; the deployments and the
MLproject name a preset instead of carrying defaults in `args` (which Prefect would replace whole)."""

from __future__ import annotations

import typing

import pytest
import yaml

from lmcore import ArgsError
from tasks.presets import PRESETS, PresetName, effective_args, merge, model_config, preset_args
from tests.pipeline_support import ROOT


def test_a_users_args_go_over_the_preset_key_by_key():
    demo, _ = effective_args("demo", {}, "bert")
    mine, notes = effective_args("demo", {"text_column": "content"}, "bert")
    assert mine == {**demo, "text_column": "content"}
    assert mine["config"]["hidden_size"] == 64 and mine["max_steps"] == 150 and mine["vocab_size"] == 2000
    deeper, _ = effective_args("demo", {"config": {"num_hidden_layers": 3}, "max_steps": 20}, "bert")
    assert deeper["config"] == {**demo["config"], "num_hidden_layers": 3} and deeper["max_steps"] == 20
    assert "preset 'demo'" in notes[0] and "text_column" in notes[0]
    assert effective_args("none", {"max_steps": 5}, "bert")[0] == {"max_steps": 5}
    with pytest.raises(ArgsError, match="preset='tiny': choose one of demo, small, base, none"):
        effective_args("tiny", {}, "bert")
    assert merge({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"c": 3}, "d": [2]}) == {"a": {"b": 1, "c": 3}, "d": [2]}


def test_a_saved_model_keeps_its_shape_and_gets_the_continuing_settings():
    cont, _ = effective_args("demo", {"max_steps": 40}, "bert", from_saved=True)
    assert "config" not in cont and "vocab_size" not in cont
    assert cont["learning_rate"] == PRESETS["demo"]["continuing"]["learning_rate"] and cont["max_steps"] == 40
    assert effective_args("demo", {}, "gpt2", from_saved=True)[0]["mlm"] is False


@pytest.mark.parametrize("model_type", ["bert", "camembert", "distilbert", "electra", "gpt2", "longformer",
                                        "openai-gpt", "roberta"])
def test_every_model_types_preset_shape_is_one_its_config_knows(model_type):
    from lmcore.models.families import apply_config_overrides
    from lmcore.models.registry import MODEL_TYPES

    for name in ("demo", "small", "base"):
        args = preset_args(name, model_type, from_saved=False)
        config = MODEL_TYPES[model_type].config_cls()
        apply_config_overrides(config, args["config"], "preset")  # raises on a field the class does not have
        width = config.hidden_size if hasattr(config, "hidden_size") else config.dim
        assert width == PRESETS[name]["shape"]["width"][0]
        assert args.get("mlm", True) is (model_type not in ("gpt2", "openai-gpt"))
    assert model_config("distilbert", (64, 2, 2, 128)) == {"dim": 64, "n_layers": 2, "n_heads": 2, "hidden_dim": 128}


def test_electra_config_is_the_discriminators_and_both_together_are_refused():
    demo, notes = effective_args("demo", {}, "electra")
    assert "config" not in demo and demo["discriminator_config"]["hidden_size"] == 64
    assert demo["discriminator_config"]["embedding_size"] == 64 and "generator_config" not in demo
    assert any("the preset's config is the discriminator's" in n for n in notes)
    assert any("generator is a quarter of the discriminator's width (hidden 16)" in n for n in notes)
    mine, notes = effective_args("demo", {"config": {"num_hidden_layers": 3}}, "electra")
    assert mine["discriminator_config"] == {**demo["discriminator_config"], "num_hidden_layers": 3}
    assert any(n.startswith("ELECTRA: args.config is the discriminator's") for n in notes)
    own, notes = effective_args("demo", {"discriminator_config": {"hidden_size": 32},
                                         "generator_config": {"hidden_size": 16}}, "electra")
    assert own["discriminator_config"]["hidden_size"] == 32 and own["discriminator_config"]["num_hidden_layers"] == 2
    assert any("generator from args.generator_config (hidden 16)" in n for n in notes)
    with pytest.raises(ArgsError, match="args.config and args.discriminator_config"):
        effective_args("demo", {"config": {"hidden_size": 32}, "discriminator_config": {"hidden_size": 32}},
                       "electra")


def test_deployments_and_mlproject_name_a_preset_instead_of_carrying_args():
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    for name in ("from-scratch", "fine-tune", "nightly"):
        params = deployments[name]["parameters"]
        assert params["preset"] == "demo" and "args" not in params, name
    assert set(typing.get_args(PresetName)) == set(PRESETS)
    project = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
    for entry in ("pretrain", "finetune"):
        assert project[entry]["parameters"]["preset"]["default"] == "demo"
        assert "--preset {preset}" in project[entry]["command"]


def test_the_flows_help_answers_at_once_with_the_deployments_and_presets():
    import subprocess
    import sys
    import time

    start = time.time()
    out = subprocess.run([sys.executable, "-m", "flows.pretrain", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    took = time.time() - start
    # Seconds, not the tens a torch import and a server start would take; the margin is for the suite's other test
    # processes sharing the two cores (scripts/test runs three).
    assert out.returncode == 0 and took < 5.0, (took, out.stderr[-2000:])
    assert "--preset" in out.stdout and "pretrain/from-scratch: corpus=sample" in out.stdout
    assert "finetune/nightly:" in out.stdout and "demo: hidden 64, 2 layers" in out.stdout
    assert "torch" not in out.stderr
