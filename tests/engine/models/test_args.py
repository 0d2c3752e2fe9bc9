"""Settings: unknown names, every problem reported at once, bad combinations, output_dir protection, hub names."""

import logging
import os

import pytest

from lmcore import ArgsError, LanguageModelingArgs, LanguageModelingModel, ModelNotFoundError
from lmcore.models.args import field_docs
from tests.conftest import tiny_args


def test_every_field_the_issue_names_exists_and_is_documented():
    names = """reprocess_input_data overwrite_output_dir num_train_epochs max_steps dataset_type vocab_size
    min_frequency special_tokens mlm mlm_probability block_size max_seq_length config tokenizer_name config_name
    train_batch_size eval_batch_size gradient_accumulation_steps learning_rate warmup_ratio warmup_steps
    weight_decay adam_epsilon max_grad_norm manual_seed save_steps save_model_every_epoch evaluate_during_training
    evaluate_during_training_steps output_dir best_model_dir cache_dir do_lower_case generator_config
    discriminator_config discriminator_loss_weight tie_generator_and_discriminator_embeddings""".split()
    docs = field_docs()
    for name in names:
        assert hasattr(LanguageModelingArgs(), name), name
        assert len(docs.get(name, "")) > 15, f"{name} has no docstring"


def test_unknown_attribute_is_rejected_with_the_nearest_name():
    args = LanguageModelingArgs()
    with pytest.raises(ArgsError, match=r"'num_train_epoch'.*did you mean 'num_train_epochs'"):
        args.num_train_epoch = 3


def test_unknown_dict_keys_are_all_reported_before_anything_is_set():
    args = LanguageModelingArgs()
    with pytest.raises(ArgsError) as e:
        args.update_from_dict({"learning_rate": 1.0, "trian_batch_size": 4, "mlm_probabilty": 0.2})
    assert "'trian_batch_size'" in str(e.value) and "'train_batch_size'" in str(e.value)
    assert "'mlm_probabilty'" in str(e.value) and "'mlm_probability'" in str(e.value)
    assert args.learning_rate == 4e-5  # nothing was applied


def test_all_problems_are_listed_at_once():
    bad = {"dataset_type": "lines", "train_batch_size": 0, "mlm_probability": 1.5, "learning_rate": -1}
    with pytest.raises(ArgsError) as e:
        LanguageModelingModel("bert", None, args=bad, train_files="x.txt")
    msg = str(e.value)
    for field in ("dataset_type", "train_batch_size", "mlm_probability", "learning_rate"):
        assert field in msg, field


@pytest.mark.parametrize("model_type, mlm, fix", [("gpt2", True, "set mlm=False"), ("openai-gpt", True, "mlm=False"),
                                                  ("bert", False, "set mlm=True"), ("roberta", False, "mlm=True")])
def test_objective_must_fit_the_model_type(model_type, mlm, fix, corpus, tmp_path):
    with pytest.raises(ArgsError, match=fix):
        LanguageModelingModel(model_type, None, args=tiny_args(model_type, tmp_path, mlm=mlm),
                              train_files=corpus["train"])


def test_from_scratch_needs_train_files(tmp_path):
    with pytest.raises(ArgsError, match="train_files"):
        LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path))


def test_unknown_model_type_lists_the_valid_ones(tmp_path):
    with pytest.raises(ArgsError, match="camembert, distilbert, electra, gpt2"):
        LanguageModelingModel("bart", None, args=tiny_args("bert", tmp_path), train_files="x")


def test_unknown_config_field_is_named(corpus, tmp_path):
    with pytest.raises(ArgsError, match="'hiden_size'"):
        LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, config={"hiden_size": 8}),
                              train_files=corpus["train"])


def test_non_empty_output_dir_is_protected_before_any_work(corpus, tmp_path):
    args = tiny_args("bert", tmp_path, overwrite_output_dir=False)
    out = tmp_path / "out-bert"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    model = LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])
    with pytest.raises(ArgsError, match="overwrite_output_dir"):
        model.train_model(corpus["train"])
    assert sorted(os.listdir(out)) == ["precious.txt"]
    assert not (tmp_path / "cache" / "features").exists()  # failed before tokenizing anything


def test_evaluate_during_training_needs_an_eval_file(corpus, tmp_path):
    model = LanguageModelingModel("bert", None, args=tiny_args("bert", tmp_path, evaluate_during_training=True),
                                  train_files=corpus["train"])
    with pytest.raises(ArgsError, match="eval_file"):
        model.train_model(corpus["train"])


def test_hub_name_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(ModelNotFoundError) as e:
        LanguageModelingModel("bert", "bert-base-cased", args=tiny_args("bert", tmp_path))
    msg = str(e.value)
    assert "'bert-base-cased'" in msg and "not in the local Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "saved model directory" in msg


def test_missing_local_directory_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        LanguageModelingModel("bert", str(tmp_path / "nope"), args=tiny_args("bert", tmp_path))


def test_model_type_must_match_the_saved_model(trained_dirs, tmp_path):
    with pytest.raises(ArgsError, match="holds a 'gpt2' model"):
        LanguageModelingModel("bert", trained_dirs["gpt2"], args=tiny_args("bert", tmp_path))


def test_args_round_trip_through_model_args_json(tmp_path):
    args = LanguageModelingArgs()
    args.update_from_dict({"vocab_size": 1234, "config": {"hidden_size": 8}, "mlm": False})
    args.save(str(tmp_path))
    loaded = LanguageModelingArgs.load(str(tmp_path))
    assert loaded == args


@pytest.mark.parametrize("native, mode, expected", [(True, "auto", "bfloat16"), (False, "auto", None),
                                                    (False, "bf16", "bfloat16"), (True, "no", None),
                                                    (True, "bf16", "bfloat16"), (False, "fp16", "bfloat16")])
def test_mixed_precision_follows_the_hardware_on_cpu(monkeypatch, caplog, native, mode, expected):
    import torch

    from lmcore.training import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    precision._warn_emulated_bf16.cache_clear()
    caplog.set_level(logging.WARNING, logger="lmcore")
    resolved = precision.resolve(torch.device("cpu"), mode)
    dtype = resolved.autocast_dtype
    assert (None if dtype is None else str(dtype).split(".")[1]) == expected
    assert resolved.name == (expected or "float32") and not resolved.grad_scaler
    # An explicit bf16 where the CPU can only emulate it is warned about (once), never an "auto" or a native one.
    warned = [r.getMessage() for r in caplog.records if "emulates bf16" in r.getMessage()]
    assert len(warned) == (not native and mode in ("bf16", "fp16")), warned
    if warned:
        assert repr(mode) in warned[0] and "'auto'" in warned[0]
        precision.resolve(torch.device("cpu"), mode)
        assert len([r for r in caplog.records if "emulates bf16" in r.getMessage()]) == 1


def test_hub_name_resolves_through_the_local_cache_offline(trained_dirs, tmp_path, monkeypatch):
    """A hub name that is in the local Hugging Face cache loads with the hub offline (the real loading path)."""
    import shutil

    home = tmp_path / "hf-home"
    snapshot = home / "hub" / "models--acme--tiny-bert" / "snapshots" / "0123abcd"
    shutil.copytree(trained_dirs["bert"], snapshot)
    (home / "hub" / "models--acme--tiny-bert" / "refs").mkdir()
    (home / "hub" / "models--acme--tiny-bert" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = LanguageModelingModel("bert", "acme/tiny-bert", args=tiny_args("bert", tmp_path))
    assert model.model.config.hidden_size == 32


def test_electra_hub_names_offline_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match="generator 'google/electra-small-generator' is not a local directory and is not in the local Hugging Face"):
        LanguageModelingModel("electra", "electra", generator_name="google/electra-small-generator",
                              discriminator_name="google/electra-large-discriminator", args={})
