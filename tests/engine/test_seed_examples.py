"""The examples of the documentation users know (the Simple Transformers language-modeling pages, read from
../shared/seeds/ beside the checkout), run as written except for the import line and a local model directory in
place of a hub name. Where the pages are not there, these tests are skipped with that reason.

Two documentation slips are repaired the way a reader would: examples after the first use `model_args` without
creating it, so `model_args = LanguageModelingArgs()` is added where it is missing.
"""

import os
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT, sample_lines

SEEDS = Path(os.environ.get("LMCORE_SEEDS", ROOT.parent / "shared" / "seeds"))
PAGES_PRESENT = (SEEDS / "lm-minimal-start.md").is_file() and (SEEDS / "lm-specifics.md").is_file()
needs_pages = pytest.mark.skipif(not PAGES_PRESENT, reason=f"the documentation pages are not at {SEEDS}")


def seed_examples(page: str) -> dict[str, str]:
    """Heading -> code of every python block on a seed page ({} when the pages are absent)."""
    if not PAGES_PRESENT:
        return {}
    text = (SEEDS / page).read_text()
    out = {}
    for m in re.finditer(r"```python\n(.*?)```", text, re.S):
        headings = re.findall(r"^#{2,4} (.+)$", text[:m.start()], re.M)
        out[headings[-1].strip()] = m.group(1)
    return out


def adapt(code: str, local_models: dict[str, str]) -> str:
    code = re.sub(r"from simpletransformers\.language_modeling import \((.*?)\)", r"from lmcore import (\1)",
                  code, flags=re.S)
    for hub_name, local in local_models.items():
        code = code.replace(f'"{hub_name}"', repr(local))
    if "model_args = LanguageModelingArgs()" not in code and "model_args." in code:
        code = code.replace("model_args.", "model_args = LanguageModelingArgs()\nmodel_args.", 1)
    return code


def write_data(where: Path, n_train: int) -> None:
    (where / "data").mkdir()
    (where / "data" / "train.txt").write_text("\n".join(sample_lines("train.txt", n_train)) + "\n")
    (where / "data" / "test.txt").write_text("\n".join(sample_lines("eval.txt", 30)) + "\n")


MINIMAL = seed_examples("lm-minimal-start.md")
NON_ELECTRA = [k for k in MINIMAL if "ELECTRA" not in k]


@needs_pages
def test_the_seed_page_has_the_four_non_electra_examples():
    assert NON_ELECTRA == ["Fine-Tuning a BERT model (MLM)", "Fine-Tuning a GPT-2 model (CLM)",
                           "Training a BERT model (MLM) from scratch", "Training a GPT-2 model (CLM) from scratch"]


def _example(title: str):
    """From scratch the examples build full-size models (BERT-base, GPT-2 small): slow, run in CI."""
    return pytest.param(title, marks=pytest.mark.slow if "scratch" in title else (),
                        id=re.sub(r"\W+", "-", title).strip("-"))


@needs_pages
@pytest.mark.parametrize("title", [_example(t) for t in NON_ELECTRA] or ["(pages absent)"])
def test_seed_example_runs(title, tmp_path, monkeypatch, trained_dirs):
    code = adapt(MINIMAL[title], {"bert-base-cased": trained_dirs["bert"], "gpt2-medium": trained_dirs["gpt2"]})
    assert "simpletransformers" not in code and "from lmcore import" in code
    # From scratch the examples build full-size models (BERT-base, GPT-2 small): a small corpus keeps it quick.
    write_data(tmp_path, 50 if "scratch" in title else 600)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, f"<seed example: {title}>", "exec"), scope)
    result = scope["result"]
    assert set(result) >= {"eval_loss", "perplexity"} and result["perplexity"] > 1
    assert (tmp_path / "outputs" / "model_args.json").exists()
    assert (tmp_path / "outputs" / "model.safetensors").exists()
    model = scope["model"]
    if "scratch" in title:
        # vocab_size=30000 is a ceiling: a small corpus yields fewer tokens, and the model fits the tokenizer.
        assert model.model.config.vocab_size == len(model.tokenizer) <= 30000
