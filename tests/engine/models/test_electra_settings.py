"""ELECTRA settings are honoured or refused, never ignored: `config` (what users of the other model types set,
and what the pipeline's presets carry) describes the discriminator when discriminator_config is empty."""

import logging

import pytest

from lmcore import ArgsError, LanguageModelingModel
from tests.conftest import sample_lines

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("\n".join(sample_lines("train.txt", 600)) + "\n")
    return str(path)


def _args(tmp_path, **overrides):
    args = {"vocab_size": 1000, "max_seq_length": 64, "output_dir": str(tmp_path / "out"),
            "cache_dir": str(tmp_path / "cache")}
    args.update(overrides)
    return args


def test_config_for_electra_builds_the_discriminator_and_a_quarter_width_generator(tmp_path, train_file, caplog):
    with caplog.at_level(logging.INFO, logger="lmcore"):
        model = LanguageModelingModel("electra", None, args=_args(tmp_path, config=SMALL), train_files=train_file)
    disc, gen = model.model.discriminator.config, model.model.generator.config
    assert (disc.hidden_size, disc.num_hidden_layers, disc.intermediate_size) == (64, 2, 128)
    assert (gen.hidden_size, gen.intermediate_size) == (16, 32)
    assert "describes the discriminator" in caplog.text  # said, never silent


def test_config_beside_discriminator_config_is_refused_naming_both(tmp_path, train_file):
    with pytest.raises(ArgsError, match="args.config and args.discriminator_config"):
        LanguageModelingModel("electra", None, args=_args(tmp_path, config=SMALL, discriminator_config=SMALL),
                              train_files=train_file)


def test_an_unknown_config_field_for_electra_is_named(tmp_path, train_file):
    with pytest.raises(ArgsError, match="args.config: ElectraConfig has no field.*'n_embd'"):
        LanguageModelingModel("electra", None, args=_args(tmp_path, config={"n_embd": 64}), train_files=train_file)


def test_config_reaches_a_loaded_discriminator(tmp_path, train_file):
    built = LanguageModelingModel("electra", None, args=_args(tmp_path, config=SMALL), train_files=train_file)
    built.save_model(str(tmp_path / "pair"))
    again = LanguageModelingModel("electra", str(tmp_path / "pair"),
                                  args=_args(tmp_path, config={"hidden_dropout_prob": 0.0}))
    assert again.model.discriminator.config.hidden_dropout_prob == 0.0
    assert again.model.discriminator.config.hidden_size == 64
