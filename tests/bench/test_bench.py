"""The benchmark harness runs end to end: `python bench/run.py --quick` (tiny models, small corpora, never installs a
peer; the Simple Transformers and Trainer parts run only when their environments are already there)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_bench_runs_and_reports_figures(tmp_path):
    out = tmp_path / "bench.json"
    # About 2 minutes alone on 2 cores (3.5 with the Trainer's rows, where bench/.deps-trainer is installed); the
    # margin is for cores shared with the rest of the suite (scripts/test runs three test processes on two cores:
    # 328 s so, 2026-12-04).
    done = subprocess.run([sys.executable, "bench/run.py", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr[-4000:]
    r = json.loads(out.read_text())
    s = r["sections"]
    assert set(s) == {"peak", "train", "data", "eval", "padding", "quality"}
    assert _positive(s["peak"]["fp32_gflops"]) and _positive(s["peak"]["bf16_gflops"])

    rows = s["train"]["rows"]
    assert {row["system"] for row in rows} >= {"lmcore", "lmcore-fp32", "lmcore-compile"}
    for row in rows:
        # Tiny models for a few steps: the per-step difference is noise, but every run must have happened.
        assert all(_positive(w) for walls in row["walls"].values() for w in walls)
        assert math.isfinite(row["per_step_s"]) and _positive(row["flops_per_token"])
        assert _positive(row["peak_rss_mb"])
        # What lmcore executes for MLM is less than the model FLOPs (only masked positions reach the vocabulary);
        # a peer executes about the model FLOPs.
        assert 0 < row["executed_flops_per_token"] <= row["flops_per_token"] * 1.01
        if row["system"] == "lmcore":
            assert row["executed_flops_per_token"] < 0.95 * row["flops_per_token"]
    compiled = next(row for row in rows if row["system"] == "lmcore-compile")
    assert _positive(compiled["compile_warmup_s"])

    data = s["data"]
    assert _positive(data["lmcore"]["mb_per_s"]) and _positive(data["lmcore"]["cached_s"])
    assert _positive(data["big"]["peak_rss_mb"]) and _positive(data["big"]["first_s"])
    assert all(_positive(row["tokens_per_s"]) for row in s["eval"]["rows"])
    assert 0 <= s["padding"]["lmcore_padding"] < 1 and 0 < s["padding"]["dynamic_padding"] < 1
    for row in s["quality"]["rows"]:
        assert _positive(row["default"]) and _positive(row["fp32"]) and math.isfinite(row["diff_pct"])
        assert len(row["default_runs"]) == len(row["fp32_runs"]) == len(row["seeds"]) >= 1

    # The printed report is the RESULTS.md text: a targets table and one table per section.
    for heading in ("## Targets", "## Matmul peak", "## Training", "## Data preparation", "## Evaluation",
                    "## line_by_line padding", "## Quality"):
        assert heading in done.stdout
    # --quick never writes the recorded results.
    recorded = ROOT / "bench" / "results.json"
    assert not recorded.exists() or not json.loads(recorded.read_text()).get("quick")


def _row(system, train_s, commit, date):
    return {"system": system, "setup": "BERT-MLM", "per_step_s": (train_s[1] - train_s[0]) / 10,
            "per_step_wall_s": 0.0, "tokens_per_s": 0.0, "peak_rss_mb": 100.0, "walls": {"2": [1.0], "12": [2.0]},
            "train_call_s": {"2": [train_s[0]], "12": [train_s[1]]},
            "measured": {"commit": commit, "date": date, "command": "python bench/run.py"}}


def _section(rows, commit, date, steps=(2, 12)):
    return {"steps": list(steps), "setups": ["s"], "rounds": 1, "rows": rows,
            "measured": {"commit": commit, "date": date, "command": "python bench/run.py"}}


def test_a_partial_train_rerun_keeps_the_peers_and_pools_only_the_same_engine():
    """bench/run.py's merge of a `--systems` re-run into the recorded train section: the peers' rows stay with
    their own provenance; a re-run row pools its runs with the recorded ones on the same engine commit only; a
    re-run that cannot be merged is refused rather than written over the recorded figures."""
    sys.path.insert(0, str(ROOT))
    from bench.record import merge_train_rounds

    old = _section([_row("lmcore", (5.0, 10.0), "aaa", "d1"), _row("trainer", (9.0, 20.0), "aaa", "d1")], "aaa",
                   "d1")
    same = _section([_row("lmcore", (4.0, 10.5), "aaa", "d2")], "aaa", "d2")
    merge_train_rounds(json.loads(json.dumps(old)), same, partial=True)
    assert [r["system"] for r in same["rows"]] == ["lmcore", "trainer"]
    trainer = same["rows"][1]
    assert trainer["measured"]["date"] == "d1" and trainer["per_step_s"] == pytest.approx(1.1)
    lm = same["rows"][0]
    assert lm["train_call_s"]["2"] == [5.0, 4.0] and lm["per_step_s"] == pytest.approx((10.0 - 4.0) / 10)

    other = _section([_row("lmcore", (4.0, 10.5), "bbb", "d2")], "bbb", "d2")
    merge_train_rounds(json.loads(json.dumps(old)), other, partial=True)
    assert [r["system"] for r in other["rows"]] == ["lmcore", "trainer"]
    assert other["rows"][0]["train_call_s"]["2"] == [4.0]  # another engine: not pooled
    assert other["rows"][0]["per_step_s"] == pytest.approx(0.65)

    with pytest.raises(SystemExit, match="--steps"):
        merge_train_rounds(json.loads(json.dumps(old)), _section([_row("lmcore", (4.0, 10.5), "aaa", "d2")], "aaa",
                                                                 "d2", steps=(2, 14)), partial=True)
    with pytest.raises(SystemExit):
        merge_train_rounds(json.loads(json.dumps(old)), json.loads(json.dumps(same)), same_machine=False,
                           partial=True)


def _speed_row(system, setup, tokens_per_s):
    return {"system": system, "setup": setup, "per_step_s": 4096 / tokens_per_s, "per_step_wall_s": 1.0,
            "tokens_per_s": tokens_per_s, "flops_per_token": 1e6, "executed_flops_per_token": 1e6,
            "peak_rss_mb": 100.0}


def test_the_report_judges_each_kind_of_cpu_by_its_own_targets():
    """On a CPU with native bf16 lmcore's default row is judged against the fastest peer and its fp32 row against
    the Trainer's fp32; on one without, the default is the fp32 path (its row stands for it there), and the
    fastest-peer target, stated for native-bf16 CPUs, is shown but not judged. Notes name only the peers that ran."""
    sys.path.insert(0, str(ROOT))
    from bench import report

    rows = [_speed_row("lmcore", "BERT-MLM", 6000.0), _speed_row("trainer", "BERT-MLM", 3000.0),
            _speed_row("trainer-compile", "BERT-MLM", 4500.0), _speed_row("lmcore", "GPT-2-CLM", 4000.0),
            _speed_row("trainer", "GPT-2-CLM", 3000.0)]
    peak = {"size": 2048, "threads": 2, "fp32_gflops": 100.0, "bf16_gflops": 1.2, "bf16_size": 512}
    machine = {"cpu": "x", "cores": 2, "memory_gb": 1, "avx512_bf16": False, "cpu_flags": ["avx2", "fma"],
               "torch": "t", "transformers": "t", "python": "p", "lmcore_commit": "c"}
    results = {"machine": machine, "date": "d", "command": "c", "notes": [],
               "sections": {"peak": peak, "train": {"steps": [2, 14], "rounds": 1, "tokens_per_step": 4096,
                                                    "rows": rows}}}
    text = report.render(json.loads(json.dumps(results)))
    targets = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()
               if line.startswith("| ") and " | " in line}
    assert "| 2.00x | met |" in targets["BERT-MLM lmcore fp32 tokens/s >= 1.5x Trainer fp32"]
    assert "| 1.33x | **not met** |" in targets["GPT-2-CLM lmcore fp32 tokens/s >= 1.5x Trainer fp32"]
    fastest = targets["BERT-MLM lmcore tokens/s >= 1.5x the fastest peer row (stated for CPUs with native bf16)"]
    assert fastest.endswith("| 1.33x (Trainer torch_compile=True) | n/a |")
    assert "bf16 / fp32: 1/83" in text and "square 512: emulated" in text
    assert "Simple Transformers" not in text.split("## Notes")[1] and "accelerate" in text.split("## Notes")[1]

    native = json.loads(json.dumps(results))
    native["machine"].update(avx512_bf16=True, cpu_flags=["avx2", "avx512f", "avx512_bf16"])
    native["sections"]["peak"].update(bf16_gflops=220.0, bf16_size=2048)
    native["sections"]["train"]["rows"] = rows + [_speed_row("lmcore-fp32", "BERT-MLM", 4000.0)]
    text = report.render(native)
    assert "| BERT-MLM lmcore tokens/s >= 1.5x the fastest peer row | 1.33x (Trainer bf16 + torch_compile) | " \
           "**not met** |" in text
    assert "| 1.33x | **not met** |" in next(line for line in text.splitlines()
                                              if line.startswith("| BERT-MLM lmcore fp32 tokens/s"))
    assert "not run" in next(line for line in text.splitlines() if line.startswith("| GPT-2-CLM lmcore fp32"))
    assert "bf16 / fp32: 2.2x" in text


def test_an_mfu_above_the_peak_beside_a_real_hfu_is_explained_not_printed():
    """lmcore's MLM projects only the masked positions: the formula's FLOPs (every position) at its speed can pass
    the peak while the executed ones do not. That MFU shows n/a with the reason; the HFU stays; rows under the peak
    bring no such line."""
    sys.path.insert(0, str(ROOT))
    from bench import report

    def text(model_flops):
        row = {**_speed_row("lmcore", "BERT-MLM", 8000.0), "flops_per_token": model_flops,
               "executed_flops_per_token": 20e6}
        machine = {"cpu": "x", "cores": 2, "memory_gb": 1, "avx512_bf16": False, "cpu_flags": ["avx2"],
                   "torch": "t", "transformers": "t", "python": "p", "lmcore_commit": "c"}
        return report.render({"machine": machine, "date": "d", "command": "c", "notes": [], "sections": {
            "peak": {"size": 2048, "threads": 2, "fp32_gflops": 200.0, "bf16_gflops": 1.0, "bf16_size": 512},
            "train": {"steps": [2, 14], "rounds": 1, "tokens_per_step": 4096, "rows": [row]}}})

    over, under = text(30e6), text(20e6)  # 240 and 160 GFLOP/s of model FLOPs against a 200 GFLOP/s peak
    row = next(line for line in over.splitlines() if line.startswith("| BERT-MLM | lmcore |"))
    assert "| fp32 | n/a | 80.0% |" in row
    assert "projects only the masked positions" in over and "Caution" not in over
    assert "| fp32 | 80.0% | 80.0% |" in under and "projects only the masked positions" not in under


def test_figures_go_to_the_table_of_the_cpu_class_that_measured_them(tmp_path, monkeypatch):
    """`--write-results` / `--merge-json` route by the recorded machine: an AVX512-BF16 CPU's figures to the main
    table (results.json), an AMX CPU's and an AVX2-only CPU's each to a JSON file and a RESULTS.md section of their
    own; writing one class leaves the others' figures as they were, and --render re-renders every class."""
    sys.path.insert(0, str(ROOT))
    from bench import common, record, report, run

    monkeypatch.setattr(common, "BENCH", tmp_path)
    monkeypatch.setattr(record, "CLASS_SECTIONS", {kind: (tmp_path / path.name, *rest)
                                                   for kind, (path, *rest) in record.CLASS_SECTIONS.items()})
    (tmp_path / "RESULTS.md").write_text("# old\n")
    rows = [_speed_row("lmcore", "BERT-MLM", 6000.0), _speed_row("trainer-bf16", "BERT-MLM", 3000.0)]

    def results(flags, lmcore_tokens, bf16_gflops=220.0):
        r = [dict(row) for row in rows]
        r[0].update(tokens_per_s=lmcore_tokens, per_step_s=4096 / lmcore_tokens)
        return {"machine": {"cpu": "x", "cores": 2, "memory_gb": 1, "avx512_bf16": "avx512_bf16" in flags,
                            "cpu_flags": flags, "torch": "t", "transformers": "t", "python": "p",
                            "lmcore_commit": "c"},
                "date": "d", "command": "python bench/run.py --only peak,train", "notes": [], "quick": False,
                "sections": {"peak": {"size": 2048, "threads": 2, "fp32_gflops": 100.0,
                                      "bf16_gflops": bf16_gflops, "bf16_size": 2048},
                             "train": {"steps": [2, 14], "rounds": 1, "tokens_per_step": 4096, "setups": [],
                                       "rows": r}}}

    amx = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    assert report.cpu_class(results(amx, 1)["machine"]) == "amx"
    assert report.cpu_class(results(["avx2", "avx512f", "avx512_bf16"], 1)["machine"]) == "avx512_bf16"
    assert report.cpu_class(results(["avx2", "fma"], 1)["machine"]) == "no-bf16"
    # The main table's flags with a bf16 peak 4.4x the fp32 one (a Zen 5 EPYC) are a class of their own; the
    # class is the run's measured peak's, so a run without one is classed by its flags.
    wide = results(["avx2", "avx512f", "avx512_bf16"], 8000.0, bf16_gflops=440.0)
    assert report.cpu_class(wide["machine"], wide["sections"]["peak"]) == "wide-bf16"
    assert report.cpu_class(wide["machine"], results(["avx512_bf16"], 1)["sections"]["peak"]) == "avx512_bf16"
    assert report.cpu_class(wide["machine"]) == "avx512_bf16"
    assert "peak" in run.parse(["--only", "train"]).only

    record.write_where_it_belongs(results(["avx2", "avx512f", "avx512_bf16"], 7000.0))
    record.write_where_it_belongs(results(amx, 9000.0))
    record.write_where_it_belongs(results(["avx2", "fma"], 4500.0))
    record.write_where_it_belongs(wide)
    main = json.loads((tmp_path / "results.json").read_text())
    assert main["sections"]["train"]["rows"][0]["tokens_per_s"] == 7000.0
    assert json.loads((tmp_path / "results-amx.json").read_text())["sections"]["train"]["rows"][0][
        "tokens_per_s"] == 9000.0
    assert json.loads((tmp_path / "results-no-bf16.json").read_text())["machine"]["cpu_flags"] == ["avx2", "fma"]

    md = (tmp_path / "RESULTS.md").read_text()
    amx_part = md[md.index("<!-- cpu_amx: begin -->"):md.index("<!-- cpu_amx: end -->")]
    assert "## On a CPU with AMX" in amx_part and "| 9,000 |" in amx_part and "| 7,000 |" not in amx_part
    assert "2.33x" in md.split("<!-- ")[0]  # the main table: 7,000 over the Trainer's 3,000
    assert "<!-- cpu_no_bf16: begin -->" in md and "| 4,500 |" in md.split("<!-- cpu_no_bf16: begin -->")[1]
    wide_part = md[md.index("<!-- cpu_wide_bf16: begin -->"):md.index("<!-- cpu_wide_bf16: end -->")]
    assert "## On a CPU whose AVX512-BF16 runs at full width" in wide_part and "| 8,000 |" in wide_part
    assert "bf16 / fp32: 4.4x" in wide_part and "| 8,000 |" not in md.split("<!-- ")[0]

    (tmp_path / "RESULTS.md").write_text(md.split("<!-- ")[0])  # --render brings every class's section back
    run.main(["--render"])
    again = (tmp_path / "RESULTS.md").read_text()
    assert again.count("<!-- cpu_amx: begin -->") == 1 and again.count("<!-- cpu_no_bf16: begin -->") == 1
    assert again.count("<!-- cpu_wide_bf16: begin -->") == 1

    # A CPU smoke test's figures (--quick: tiny models) are refused whatever the class, the main table's included:
    # by --merge-json of its JSON, and by --quick --write-results before anything runs. The tables stay as they were.
    before = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    for flags in (["avx2", "avx512f", "avx512_bf16"], amx, ["avx2", "fma"]):
        smoke = {**results(flags, 123.0), "quick": True}
        with pytest.raises(SystemExit, match="smoke test"):
            record.write_where_it_belongs(smoke)
    with pytest.raises(SystemExit):
        run.parse(["--quick", "--write-results"])
    assert {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()} == before


def test_a_gpu_run_and_a_later_compiled_run_share_the_gpu_section(tmp_path, monkeypatch):
    """The GPU quick bench is recorded by the same rules as the CPU tables: a later `--systems lmcore-compile`
    run on the same card adds its row beside the recorded eager ones and keeps their peak; another card's partial
    run is refused rather than mixed in; the GPU path refuses to start where torch sees no CUDA device (the engine
    would quietly train on the CPU), and --setups names only the bench's models."""
    sys.path.insert(0, str(ROOT))
    from bench import common, record, run

    monkeypatch.setattr(common, "BENCH", tmp_path)
    (tmp_path / "RESULTS.md").write_text("# CPU tables\n\n<!-- gpu_quick: begin -->\nnot yet\n"
                                         "<!-- gpu_quick: end -->\n")

    def results(command, rows, peak=True, gpu="NVIDIA H200"):
        sections = {"train": {"steps": [10, 60], "rounds": 1, "tokens_per_step": 4096, "setups": ["s"],
                              "rows": rows}}
        if peak:
            sections["peak"] = {"size": 8192, "fp32_gflops": 50_000.0, "bf16_gflops": 700_000.0, "bf16_size": 8192,
                                "device": "cuda", "threads": 16}
        return {"machine": {"cpu": "x", "cores": 16, "memory_gb": 128, "avx512_bf16": False, "cpu_flags": [],
                            "torch": "t", "transformers": "t", "python": "p", "lmcore_commit": "c", "gpu": gpu,
                            "device": "cuda"},
                "date": "d", "command": command, "notes": [], "quick": True, "sections": sections}

    eager = [_speed_row("lmcore", "BERT-MLM", 200_000.0), _speed_row("lmcore", "GPT-2-CLM", 150_000.0)]
    record.write_where_it_belongs(results("python bench/run.py --device cuda --quick", eager))
    compiled = _speed_row("lmcore-compile", "BERT-MLM", 300_000.0)
    record.write_where_it_belongs(results("python bench/run.py --device cuda --quick --only train --systems "
                                          "lmcore-compile --setups BERT-MLM", [compiled], peak=False))
    recorded = json.loads((tmp_path / "results-cuda.json").read_text())
    rows = {(r["system"], r["setup"]): r["tokens_per_s"] for r in recorded["sections"]["train"]["rows"]}
    assert rows == {("lmcore", "BERT-MLM"): 200_000.0, ("lmcore", "GPT-2-CLM"): 150_000.0,
                    ("lmcore-compile", "BERT-MLM"): 300_000.0}
    assert recorded["sections"]["peak"]["bf16_gflops"] == 700_000.0
    md = (tmp_path / "RESULTS.md").read_text()
    gpu = md[md.index("<!-- gpu_quick: begin -->"):md.index("<!-- gpu_quick: end -->")]
    assert md.startswith("# CPU tables") and "not yet" not in gpu and "NVIDIA H200" in gpu
    assert "| 300,000 |" in gpu and "| 150,000 |" in gpu
    assert "| 0.67x |" in gpu  # the default's 200,000 tokens/s over the compiled row's 300,000
    assert "fastest peer" not in gpu  # no peers run on the GPU
    (tmp_path / "RESULTS.md").write_text(md.replace(gpu, "<!-- gpu_quick: begin -->\nlost\n"))
    (tmp_path / "results.json").write_text("{}")
    monkeypatch.setattr(record, "write_markdown", lambda results: None)  # the CPU tables are not under test here
    monkeypatch.setattr(record, "CLASS_SECTIONS", {})
    record.render_recorded()
    assert (tmp_path / "RESULTS.md").read_text() == md  # --render re-renders the GPU section from its JSON

    with pytest.raises(SystemExit, match="--steps"):
        record.write_where_it_belongs(results("python bench/run.py --device cuda --quick --systems lmcore-compile",
                                              [compiled], peak=False, gpu="NVIDIA A100"))
    assert json.loads((tmp_path / "results-cuda.json").read_text()) == recorded

    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            run.parse(["--device", "cuda", "--quick"])
    with pytest.raises(SystemExit):
        run.parse(["--setups", "BERT-MLM,T5"])
    assert run.parse(["--setups", "GPT-2-CLM", "--only", "train"]).setups == ["GPT-2-CLM"]


@pytest.mark.slow
def test_the_step_profile_runs_on_tiny_models_and_counts_the_host_reads(tmp_path):
    """bench/profile_step.py --quick (the bench's tiny models): the operator shares add up, and the reads of tensor
    values are counted (on the CPU, the batch preparation's reads of host tensors: nonzero per step, not a device
    wait). Its rows, like a GPU's, are never written to RESULTS.md."""
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, "bench/profile_step.py", "--quick", "--setup", "ELECTRA", "--steps", "3",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["config"] == "ELECTRA" and row["device"] == "cpu" and "device_top" not in row
    assert sum(row["groups"].values()) == pytest.approx(1.0, abs=1e-6) and row["groups"]["matmul"] > 0
    assert row["syncs_per_step"].get("aten::_local_scalar_dense", 0) > 0
    for flags in (["--quick"], ["--device", "cuda"]):
        refused = subprocess.run([sys.executable, "bench/profile_step.py", *flags, "--write-results"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "--write-results" in refused.stderr


def test_every_bench_worker_keeps_inductor_kernels_in_the_runs_scratch_folder(tmp_path, monkeypatch):
    """The first compiled run of a model is cold whatever the user's own inductor cache holds (its warm-up is the
    cold figure RESULTS.md reports), and every later worker of the run, a peer's included, finds those kernels."""
    sys.path.insert(0, str(ROOT))
    from bench import common, run

    seen = []

    def fake_worker(cmd, env=None, timeout=None, cwd=None):
        seen.append(env or {})
        return common.Measured(1.0, 10.0, {"train_s": 1.0}, 0, "")

    monkeypatch.setattr(run, "run_worker", fake_worker)
    b = run.Bench(run.parse(["--quick"]), tmp_path)
    setup = b.setups[0]
    b.lmcore("train", setup, tokenizer="t", steps=2)
    b.trainer(setup, tokenizer="t", steps=2)
    assert [env.get("TORCHINDUCTOR_CACHE_DIR") for env in seen] == [str(tmp_path / "inductor")] * 2
    assert seen[1]["PYTHONPATH"].endswith(str(common.TRAINER_DEPS))  # the peer's own settings stay
