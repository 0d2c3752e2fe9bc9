"""Every setting name Simple Transformers 0.70.8 knows is accepted here, and does what its users expect: honoured
(checked by behaviour), inert (one warning), or refused (an error at construction)."""

import logging
import math

import pytest
import torch
import transformers

from lmcore import ArgsError, LanguageModelingArgs, LanguageModelingModel
from lmcore.models import compat
from lmcore.training import optim
from lmcore.models.args import field_names
from tests.conftest import tiny_args


def other_value(name):
    """A value different from the field's default, of a plausible type."""
    default = getattr(LanguageModelingArgs(), name)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 3
    if isinstance(default, float):
        return default + 0.25
    if isinstance(default, str):
        return default + "-x"
    if isinstance(default, dict):
        return {"r": 8}
    if isinstance(default, (list, tuple)):
        return ["x"]
    return 7  # a None default


def test_the_115_names_are_all_fields_and_each_has_one_class():
    names = compat.SIMPLE_TRANSFORMERS_FIELDS
    assert len(names) == len(set(names)) == 115
    assert set(names) <= field_names()
    classes = [set(compat.HONOURED), set(compat.INERT), set(compat.REFUSED)]
    assert sum(len(c) for c in classes) == 115 and set().union(*classes) == set(names)
    assert not set(compat.INERT) & set(compat.REFUSED)


@pytest.mark.parametrize("name", compat.SIMPLE_TRANSFORMERS_FIELDS)
def test_every_name_is_accepted_as_attribute_dict_key_and_keyword(name):
    value = getattr(LanguageModelingArgs(), name)
    a = LanguageModelingArgs()
    setattr(a, name, value)
    b = LanguageModelingArgs().update_from_dict({name: value})
    c = LanguageModelingArgs(**{name: value})
    assert getattr(a, name) == getattr(b, name) == getattr(c, name)
    assert a.problems() == [] and c.problems() == []


@pytest.mark.parametrize("name", sorted(compat.REFUSED))
def test_a_refused_setting_at_another_value_is_an_error_naming_it(name, corpus, tmp_path):
    args = tiny_args("bert", tmp_path, **{name: other_value(name)})
    with pytest.raises(ArgsError, match=rf"\b{name}="):
        LanguageModelingModel("bert", None, args=args, train_files=corpus["train"])


def test_inert_settings_warn_once_each_and_are_silent_at_their_defaults(caplog):
    warned = set()
    assert compat.warn_inert(LanguageModelingArgs(), warned) == []
    args = LanguageModelingArgs(**{name: other_value(name) for name in compat.INERT})
    with caplog.at_level(logging.WARNING, logger="lmcore.models.compat"):
        first = compat.warn_inert(args, warned)
        second = compat.warn_inert(args, warned)
    assert sorted(first) == sorted(compat.INERT) and second == []
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == len(compat.INERT)
    for name in compat.INERT:
        assert sum(m.startswith(f"{name}=") and "no effect" in m for m in messages) == 1


def test_an_unknown_name_is_still_an_error_with_the_nearest_name_all_at_once():
    with pytest.raises(ArgsError) as e:
        LanguageModelingArgs().update_from_dict({"early_stoping_patience": 2, "fp61": True, "sliding_windw": True})
    msg = str(e.value)
    assert "'early_stopping_patience'" in msg and "'sliding_window'" in msg and "'fp61'" in msg
    with pytest.raises(ArgsError, match="did you mean 'no_save'"):
        LanguageModelingArgs(no_sav=True)


def test_their_default_dataset_type_none_means_simple():
    assert LanguageModelingArgs(dataset_type="None").dataset_kind == "simple"
    assert LanguageModelingArgs(dataset_type="line_by_line_lazy").dataset_kind == "line_by_line"
    assert "dataset_type" in LanguageModelingArgs(dataset_type="lines").problems()[0]


def test_fp16_false_means_full_fp32_and_a_contradiction_is_reported():
    from lmcore.training import precision

    assert precision.mode_of(LanguageModelingArgs(fp16=False)) == "no"
    assert precision.mode_of(LanguageModelingArgs()) == "auto"
    assert precision.for_args("cpu", LanguageModelingArgs(fp16=False)).autocast_dtype is None
    assert any("fp16=False" in p for p in LanguageModelingArgs(fp16=False, mixed_precision="bf16").problems())


@pytest.mark.parametrize("scheduler", ["constant_schedule", "constant_schedule_with_warmup",
                                       "linear_schedule_with_warmup", "cosine_schedule_with_warmup",
                                       "cosine_with_hard_restarts_schedule_with_warmup",
                                       "polynomial_decay_schedule_with_warmup"])
def test_each_schedule_equals_transformers_get_scheduler(scheduler):
    args = LanguageModelingArgs(scheduler=scheduler, learning_rate=3e-4, cosine_schedule_num_cycles=2.0,
                                polynomial_decay_schedule_lr_end=1e-6, polynomial_decay_schedule_power=2.0)
    total, warmup = 50, 7
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    extra = {"cosine_schedule_with_warmup": {"num_cycles": 2.0},
             "cosine_with_hard_restarts_schedule_with_warmup": {"num_cycles": 2},
             "polynomial_decay_schedule_with_warmup": {"lr_end": 1e-6, "power": 2.0}}.get(scheduler, {})
    name = scheduler.replace("_schedule_with_warmup", "_with_warmup").replace("_schedule", "")
    name = {"cosine_with_hard_restarts_with_warmup": "cosine_with_restarts",
            "linear_with_warmup": "linear", "cosine_with_warmup": "cosine",
            "polynomial_decay_with_warmup": "polynomial"}.get(name, name)
    reference = transformers.get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total,
                                           scheduler_specific_kwargs=extra or None)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        reference.step()
    ours = [args.learning_rate * optim.lr_multiplier(args, s, total, warmup) for s in range(total)]
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert len(set(round(x, 12) for x in ours)) >= (1 if scheduler == "constant_schedule" else 5)


def test_a_bad_scheduler_or_optimizer_name_lists_the_valid_ones():
    problems = LanguageModelingArgs(scheduler="cosine", optimizer="Adam8bit").problems()
    assert any("polynomial_decay_schedule_with_warmup" in p for p in problems)
    assert any("AdamW, Adafactor" in p for p in problems)
