"""Render the bench's figures (the dict bench/run.py builds) as RESULTS.md: one table per section, each target
with its measured figure and met / not met."""

from __future__ import annotations

SYSTEM_NAMES = {"lmcore": "lmcore", "lmcore-fp32": "lmcore (fp32)", "trainer": "transformers Trainer",
                "simpletransformers": "Simple Transformers"}

TRAIN_NOTES = [
    "The Trainer has no ELECTRA row: transformers ships no ELECTRA pre-training objective (no collator or loss "
    "for the generator + discriminator pair), and run_mlm.py / run_clm.py cover only MLM and CLM.",
    "Simple Transformers' max_steps=N stops after N + 1 optimizer steps; both runs of a pair carry the extra step, "
    "so it cancels in the difference.",
    "Simple Transformers' ELECTRA final save (safetensors) fails under transformers 4.57.6 because its generator "
    "and discriminator share one embedding tensor; the bench's worker makes that save use "
    "safe_serialization=False. The save is outside the per-step difference.",
    "Simple Transformers loads the shared vocabulary with its slow tokenizer classes (BertTokenizer, "
    "GPT2Tokenizer, ElectraTokenizer), as it always does; same ids, slower feature building.",
    "The Trainer needs accelerate, which lmcore does not; the bench installs it into bench/.deps-trainer.",
]


def render(r: dict) -> str:
    out = [f"# lmcore benchmark results{' (--quick smoke run: not a measurement)' if r.get('quick') else ''}", "",
           _machine(r), ""]
    targets: list[tuple[str, str, bool | None]] = []
    s = r["sections"]
    peak = s.get("peak")
    if peak:
        out += [_peak(peak), ""]
    if "train" in s:
        out += [_train(s["train"], peak, targets, r["machine"]), ""]
    if "data" in s:
        out += [_data(s["data"], targets), ""]
    if "padding" in s:
        out += [_padding(s["padding"], targets), ""]
    if "eval" in s:
        out += [_eval(s["eval"], s.get("train"), targets), ""]
    if "quality" in s:
        out += [_quality(s["quality"], targets), ""]
    out[3:3] = [_targets(targets), ""]
    notes = list(r.get("notes", []))
    if "train" in s:
        notes += TRAIN_NOTES
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def _machine(r: dict) -> str:
    m = r["machine"]
    flags = ", ".join(m["cpu_flags"]) if "cpu_flags" in m else "not recorded"
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, avx512_bf16: "
            f"{'yes' if m['avx512_bf16'] else 'no'} (CPU flags: {flags}); torch {m['torch']}, transformers {m['transformers']}, "
            f"Python {m['python']}. Date: {r['date']}.\n\n"
            "| section | measured by | date | lmcore commit | minutes |\n|---|---|---|---|---|\n"
            + "\n".join(f"| {name} | `{s.get('measured', {}).get('command', r['command'])}` | "
                        f"{s.get('measured', {}).get('date', r['date'])} | "
                        f"{s.get('measured', {}).get('commit', m['lmcore_commit'])} | {s.get('seconds', 0) / 60:.1f} |"
                        for name, s in r["sections"].items()) + "\n")


def _targets(targets) -> str:
    rows = ["## Targets", "", "| target | measured | status |", "|---|---|---|"]
    for what, figure, ok in targets:
        rows.append(f"| {what} | {figure} | {'n/a' if ok is None else ('met' if ok else '**not met**')} |")
    return "\n".join(rows)


def _fmt(x, spec=",.0f") -> str:
    return "n/a" if x is None else format(x, spec)


def _x(ratio) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def _peak(p: dict) -> str:
    return "\n".join([
        "## Matmul peak (torch.mm, square {0}, all {1} threads, best burst)".format(p["size"], p["threads"]), "",
        "| dtype | GFLOP/s |", "|---|---|", f"| fp32 | {p['fp32_gflops']:,.0f} |",
        f"| bf16 | {p['bf16_gflops']:,.0f} |",
        "", f"bf16 / fp32: {p['bf16_gflops'] / p['fp32_gflops']:.1f}x"])


def compute_dtype(system: str, machine: dict) -> str:
    """What a system's matmuls run in: lmcore's default (`mixed_precision="auto"`) takes bf16 where the CPU has it
    natively (AVX512-BF16 or AMX), fp32 elsewhere; lmcore-fp32, the Trainer and Simple Transformers run fp32."""
    native = machine.get("avx512_bf16") or "amx_bf16" in machine.get("cpu_flags", [])
    return "bf16" if system == "lmcore" and native else "fp32"


def _train(t: dict, peak: dict | None, targets, machine: dict) -> str:
    short, long_ = t["steps"]
    rows = [f"## Training (batch 32 x block 128 = {t['tokens_per_step']} tokens/step)", "",
            f"Time per step = (best {long_}-step run - best {short}-step run) / {long_ - short}, over {t['rounds']} "
            "interleaved round(s), each run a fresh process, timed around the system's own train call "
            "(lmcore train_model, Trainer.train, Simple Transformers train_model; the feature cache is warm); "
            "the same difference of whole-process wall times is shown beside it. MFU = model FLOPs/token "
            "(bench/flops.py: 6 · (non-embedding params + LM head d·V) + 12 · L · T · d) × tokens/s ÷ the "
            "measured matmul peak of the dtype the run computes in (lmcore's default: bf16 on a CPU with native "
            "bf16, else fp32; every other row: fp32). For BERT-MLM and ELECTRA the formula counts the vocabulary "
            "projection at every position; lmcore projects only the masked ones (15%), so its MFU there is model "
            "FLOPs per second (work it skips included), not the share of the hardware it keeps busy. Peak RSS: the "
            "largest of the system's runs.", "",
            "| config | system | s/step | s/step (wall) | tokens/s | lmcore speed-up | computes in | MFU | "
            "peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    by = {(row["setup"], row["system"]): row for row in t["rows"]}
    overstated = False
    for row in t["rows"]:
        base = by.get((row["setup"], "lmcore"), {}).get("tokens_per_s")
        rel = base / row["tokens_per_s"] if base and row["tokens_per_s"] else None
        dtype, mfu = compute_dtype(row["system"], machine), None
        if peak and row["tokens_per_s"]:
            mfu = row["flops_per_token"] * row["tokens_per_s"] / 1e9 / peak[f"{dtype}_gflops"]
            overstated |= mfu > 1
        rows.append(f"| {row['setup']} | {SYSTEM_NAMES[row['system']]} | {row['per_step_s']:.3f} | "
                    f"{row.get('per_step_wall_s', float('nan')):.3f} | {_fmt(row['tokens_per_s'])} | "
                    f"{'1.00x' if row['system'] == 'lmcore' else _x(rel)} | {dtype} | "
                    f"{_fmt(mfu if mfu is None or mfu <= 1 else None, '.1%')} | {row['peak_rss_mb']:,.0f} |")
        if row["system"] == "lmcore" and row["setup"] == "BERT-MLM" and mfu is not None:
            # Above 100% the peak was measured while other work held the cores: the figure proves nothing.
            targets.append((f"MLM MFU >= 25% of the {dtype} matmul peak", f"{mfu:.1%}",
                            mfu >= 0.25 if mfu <= 1 else None))
    if overstated:
        rows.append("")
        rows.append("**Caution:** a run above 100% of its dtype's peak (shown n/a) means the peak was measured "
                    "while other work held the cores; MFU figures from this session overstate.")
    for setup, ours, peer, need in (("BERT-MLM", "lmcore", "trainer", 4.0),
                                    ("BERT-MLM", "lmcore", "simpletransformers", 4.0),
                                    ("GPT-2-CLM", "lmcore", "trainer", 3.0),
                                    ("ELECTRA", "lmcore", "simpletransformers", 5.0),
                                    ("BERT-MLM", "lmcore-fp32", "trainer", 1.5),
                                    ("GPT-2-CLM", "lmcore-fp32", "trainer", 1.5)):
        a, p = by.get((setup, ours)), by.get((setup, peer))
        label = f"{setup} {SYSTEM_NAMES[ours]} tokens/s >= {need}x {SYSTEM_NAMES[peer]}"
        if a and p and a["tokens_per_s"] and p["tokens_per_s"]:
            ratio = a["tokens_per_s"] / p["tokens_per_s"]
            figure = f"{ratio:.2f}x"
            if ratio < need and peak:
                # What the target asks of this CPU: the MFU lmcore would need, against the peak it computes at.
                dtype = compute_dtype(ours, machine)
                needed = need * p["tokens_per_s"] * a["flops_per_token"] / 1e9 / peak[f"{dtype}_gflops"]
                figure += f" ({need:g}x needs {needed:.0%} of this CPU's {dtype} matmul peak)"
            targets.append((label, figure, ratio >= need))
        else:
            why = "no valid figure (a negative step-count difference: noise)" if a and p else "not run"
            targets.append((label, why, None))
    return "\n".join(rows)


def _data(d: dict, targets) -> str:
    lm = d["lmcore"]
    rows = ["## Data preparation (dataset_type simple, BERT WordPiece tokenizer, block 128)", "",
            "| system | corpus MB | first run s | MB/s | cached run s | peak RSS MB |", "|---|---|---|---|---|---|",
            f"| lmcore (load_features) | {d['corpus_mb']:.0f} | {lm['first_s']:.2f} | {lm['mb_per_s']:.2f} | "
            f"{lm['cached_s']:.3f} | {lm['peak_rss_mb']:,.0f} |"]
    if "trainer" in d:
        t = d["trainer"]
        rows.append(f"| datasets map + group_texts (run_mlm.py) | {d['corpus_mb']:.0f} | {t['first_s']:.2f} | "
                    f"{t['mb_per_s']:.2f} | | {t['peak_rss_mb']:,.0f} |")
    st = d.get("simpletransformers")
    if st:
        rows.append(f"| Simple Transformers (SimpleDataset) | {st['corpus_mb']:.0f} | {st['first_s']:.2f} | "
                    f"{st['mb_per_s']:.2f} | | {st['peak_rss_mb']:,.0f} |")
        ratio = lm["mb_per_s"] / st["mb_per_s"]
        targets.append(("Tokenization >= 2x Simple Transformers' feature building", f"{ratio:.1f}x", ratio >= 2))
    else:
        targets.append(("Tokenization >= 2x Simple Transformers' feature building", "not run", None))
    targets.append(("Second run, same corpus and tokenizer: < 1 s of preparation", f"{lm['cached_s']:.3f} s",
                    lm["cached_s"] < 1.0))
    big = d["big"]
    label = f"{big['corpus_mb']:,.0f} MB corpus"
    targets.append((f"1 GB corpus prepares with peak RSS < 2 GB ({label} here)", f"{big['peak_rss_mb']:,.0f} MB",
                    big["peak_rss_mb"] < 2048 if big["corpus_mb"] >= 1000 else None))
    rows += ["", f"Large corpus ({label}, the sample corpus repeated): first run {big['first_s']:.1f} s "
             f"({big['corpus_mb'] / big['first_s']:.2f} MB/s), peak RSS {big['peak_rss_mb']:,.0f} MB; cached run "
             f"{big['cached_s']:.2f} s, peak RSS {big['cached_peak_rss_mb']:,.0f} MB. Peak RSS is the whole "
             "process (Python, torch and transformers imports included)."]
    return "\n".join(rows)


def _padding(p: dict, targets) -> str:
    targets.append(("line_by_line: <= 10% padding tokens", f"{p['lmcore_padding']:.1%}", p["lmcore_padding"] <= 0.10))
    return "\n".join([
        "## line_by_line padding (batch 32, block 128, sample corpus)", "",
        "| batching | padding tokens |", "|---|---|",
        f"| lmcore (epoch_batches, group_by_length) | {p['lmcore_padding']:.1%} |",
        f"| shuffled batches, dynamic padding | {p['dynamic_padding']:.1%} |", "", f"{p['examples']} examples."])


def _eval(e: dict, train: dict | None, targets) -> str:
    train_tps = {row["setup"]: row["tokens_per_s"] for row in (train or {}).get("rows", [])
                 if row["system"] == "lmcore"}
    rows = [f"## Evaluation (lmcore eval_model, eval_batch_size {e['eval_batch_size']}, features cached, best of 3 calls)", "",
            "| config | eval tokens/s | lmcore training tokens/s | ratio |", "|---|---|---|---|"]
    for row in e["rows"]:
        t = train_tps.get(row["setup"])
        ratio = row["tokens_per_s"] / t if t else None
        rows.append(f"| {row['setup']} | {row['tokens_per_s']:,.0f} | {_fmt(t)} | {_x(ratio)} |")
        targets.append((f"{row['setup']} evaluation >= 3x training tokens/s", _x(ratio),
                        None if ratio is None else ratio >= 3))
    return "\n".join(rows)


def _quality(q: dict, targets) -> str:
    rows = ["## Quality: held-out perplexity, lmcore default vs the fp32 path (mixed_precision=\"no\")", "",
            "Trained on 95% of the sample corpus, evaluated on the other 5% plus the bundled eval file; learning "
            "rate 1e-3, 10% warm-up. ELECTRA: the generator's perplexity.", "",
            "| config | steps | default | fp32 | difference |", "|---|---|---|---|---|"]
    for row in q["rows"]:
        rows.append(f"| {row['setup']} | {row['steps']} | {row['default']:.2f} | {row['fp32']:.2f} | "
                    f"{row['diff_pct']:+.2f}% |")
        targets.append((f"{row['setup']} perplexity at most 2% above fp32's ({row['steps']} steps; lower is better)",
                        f"{row['diff_pct']:+.2f}%", row["diff_pct"] <= 2.0))
    return "\n".join(rows)
