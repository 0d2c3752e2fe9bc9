"""The sample corpus is made on this machine, not shipped: its properties, its notice, where the reserved name
"sample" applies and where a user's own path wins. Figures here are bounds, not the counts of one Python's text."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from lmcore import CorpusError
from lmcore.data import sample_corpus
from lmcore.data.corpus import resolve_files
from tests.conftest import ROOT


def test_the_sample_is_prose_split_into_train_and_a_held_out_part():
    folder = sample_corpus.ensure()
    train = (folder / "train.txt").read_text(encoding="utf-8").splitlines()
    held = (folder / "eval.txt").read_text(encoding="utf-8").splitlines()
    assert len(train) > 1000 and len(held) >= sample_corpus.EVAL_MIN
    assert len(held) == max(sample_corpus.EVAL_MIN, (len(train) + len(held)) // sample_corpus.EVAL_SHARE)
    assert not set(train) & set(held) and len(set(train)) == len(train)
    assert all(len(line) >= 60 and ">>>" not in line for line in train + held)


def test_the_notice_says_where_the_text_comes_from_and_under_which_licence():
    import platform

    notice = (sample_corpus.ensure() / "NOTICE").read_text()
    assert "PSF License Agreement" in notice and "Python Software Foundation" in notice
    assert f"Python {platform.python_version()}" in notice and "not part of lmcore" in notice
    for name in ("train.txt", "eval.txt"):
        assert name in notice


def test_a_fresh_folder_gets_the_same_bytes_and_concurrent_writers_agree(tmp_path, monkeypatch):
    monkeypatch.setenv(sample_corpus.FOLDER_ENV, str(tmp_path / "sample-data"))
    folders = []
    writers = [threading.Thread(target=lambda: folders.append(sample_corpus.ensure())) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert folders == [tmp_path / "sample-data"] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample-data"]  # no scratch folder left behind
    monkeypatch.delenv(sample_corpus.FOLDER_ENV)
    usual = sample_corpus.ensure()
    for name in ("train.txt", "eval.txt"):
        assert (tmp_path / "sample-data" / name).read_bytes() == (usual / name).read_bytes()


def test_only_the_exact_reserved_value_names_the_sample(tmp_path, monkeypatch):
    folder = sample_corpus.ensure()
    monkeypatch.chdir(tmp_path)
    assert resolve_files(["sample", "sample[eval]"]) == [folder / "train.txt", folder / "eval.txt"]
    mine = tmp_path / "sample"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own notes, nothing to do with the sample\n")
    assert resolve_files("./sample") == [Path("sample/notes.txt")]
    with pytest.raises(CorpusError, match=r"names the generated sample corpus, and ./sample exists too"):
        resolve_files("sample")


def test_no_third_party_text_is_committed_or_packaged():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = listed.stdout.splitlines()
    assert not [f for f in files if f.startswith("lmcore/") and not f.endswith(".py")]
    assert "LICENSE" in files and "THIRD_PARTY_NOTICES.md" in files
    assert "sample_data" not in (ROOT / "pyproject.toml").read_text()
