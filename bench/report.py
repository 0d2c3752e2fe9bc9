"""Render the bench's figures (the dict bench/run.py builds) as RESULTS.md: one table per section, each target
with its measured figure and met / not met."""

from __future__ import annotations

SYSTEM_NAMES = {"lmcore": "lmcore", "lmcore-fp32": "lmcore (fp32)", "lmcore-compile": "lmcore (compiled)",
                "trainer": "transformers Trainer", "trainer-bf16": "Trainer bf16=True",
                "trainer-compile": "Trainer torch_compile=True", "simpletransformers": "Simple Transformers"}
COMPILE_RUN_STEPS = 500
"""The run length the compiled path's target is stated for (warm-up included)."""

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
    smoke = r.get("quick") and r["machine"].get("device") != "cuda"  # on a GPU, --quick is the measurement
    out = [f"# lmcore benchmark results{' (--quick smoke run: not a measurement)' if smoke else ''}", "",
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
    if "train" in s:  # the notes on the peers whose rows are there
        ran = {row["system"] for row in s["train"]["rows"]}
        notes += [n for n in TRAIN_NOTES if ("Simple Transformers" in n) <= ("simpletransformers" in ran)
                  and ("Trainer" in n) <= any(x.startswith("trainer") for x in ran)]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


def _machine(r: dict) -> str:
    m = r["machine"]
    flags = ", ".join(m["cpu_flags"]) if "cpu_flags" in m else "not recorded"
    gpu = f"GPU {m['gpu']} (the models train there); " if m.get("device") == "cuda" else ""
    family = f" ({m['cpu_family']})" if m.get("cpu_family") else ""
    return (f"Machine: {gpu}{m['cpu']}{family}, {m['cores']} cores, {m['memory_gb']} GB RAM, avx512_bf16: "
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
        ("## Matmul peak (torch.mm on the GPU, square {0}, fp32 without TF32, best burst)"
         if p.get("device") == "cuda" else "## Matmul peak (torch.mm, square {0}, all {1} threads, best burst)"
         ).format(p["size"], p.get("threads")), "",
        "| dtype | GFLOP/s |", "|---|---|", f"| fp32 | {p['fp32_gflops']:,.0f} |",
        f"| bf16{'' if p.get('bf16_size', p['size']) == p['size'] else ' (square ' + str(p['bf16_size']) + ': emulated, no native bf16)'} "
        f"| {p['bf16_gflops']:,.0f} |",
        "", f"bf16 / fp32: {_ratio(p['bf16_gflops'] / p['fp32_gflops'])}"])


def _ratio(x: float) -> str:
    """2.2x; or, for a slow fraction (emulated bf16 on a CPU without it), 1/120."""
    return f"{x:.1f}x" if x >= 0.1 else f"1/{1 / x:,.0f}"


def native_bf16_machine(machine: dict) -> bool:
    """Whether a recorded machine's CPU runs bf16 natively (AVX512-BF16 or AMX in its recorded flags)."""
    return bool(machine.get("avx512_bf16")) or "amx_bf16" in (machine.get("cpu_flags") or [])


WIDE_BF16_RATIO = 3.0
"""A bf16 matmul peak at least this many times the fp32 one marks an AVX512-BF16 CPU whose bf16 dot products run
at full width: 4.4x measured on an AMD EPYC of family 26 (Zen 5), against 2.2x on the main table's EPYC."""


def cpu_class(machine: dict, peak: dict | None = None) -> str:
    """Which table a recorded CPU's figures belong in: "amx" (bf16 matmuls on AMX tiles: several times the fp32
    peak, where AVX512-BF16 alone gives about twice), "wide-bf16" (AVX512-BF16 without AMX whose measured bf16
    matmul peak is still WIDE_BF16_RATIO times its fp32 one or more: the flags are the main table's, the hardware
    is not), "avx512_bf16" (native bf16 without AMX: the main table), or "no-bf16" (neither AVX512-BF16 nor AMX,
    AVX-512F CPUs without BF16 included: lmcore's default computes in fp32). They cannot share a table: the same
    rows stand for different work on each. `peak`: the run's matmul peak section (without one, the flags decide)."""
    if "amx_bf16" in (machine.get("cpu_flags") or []):
        return "amx"
    if not native_bf16_machine(machine):
        return "no-bf16"
    if peak and peak.get("bf16_gflops", 0) >= WIDE_BF16_RATIO * peak.get("fp32_gflops", float("inf")):
        return "wide-bf16"
    return "avx512_bf16"


def compute_dtype(system: str, machine: dict) -> str:
    """What a system's matmuls run in: lmcore's default (`mixed_precision="auto"`, compiled or not) takes bf16 where
    the CPU has it natively (AVX512-BF16 or AMX), fp32 elsewhere; the Trainer's bf16 and compiled rows run its
    bf16=True there; lmcore-fp32, the plain Trainer and Simple Transformers run fp32."""
    native = native_bf16_machine(machine)
    if machine.get("device") == "cuda":  # "auto" on a GPU: bf16 where it has it (every card this bench targets)
        native = True
    best = ("lmcore", "lmcore-compile", "trainer-bf16", "trainer-compile")
    return "bf16" if system in best and native else "fp32"


def _name(system: str, machine: dict) -> str:
    if system == "trainer-compile" and compute_dtype(system, machine) == "bf16":
        return "Trainer bf16 + torch_compile"
    return SYSTEM_NAMES[system]


def _train(t: dict, peak: dict | None, targets, machine: dict) -> str:
    short, long_ = t["steps"]
    counts = sorted({len(r.get("train_call_s", {}).get(str(short), [])) or t["rounds"] for r in t["rows"]})
    rounds = (f"{counts[0]}" if len(counts) == 1 else
              f"{counts[0]}-{counts[-1]} (rows re-run with --systems have more)")
    by_run: dict[tuple, list[str]] = {}
    for r in t["rows"]:
        m = r.get("measured") or t.get("measured") or {}
        names = by_run.setdefault((m.get("date"), m.get("commit"), m.get("command")), [])
        if _name(r["system"], machine) not in names:
            names.append(_name(r["system"], machine))
    provenance = "" if len(by_run) < 2 else " Rows measured in separate runs of the same machine: " + "; ".join(
        f"{', '.join(names)}: `{command}`, {date}, lmcore {commit}" for (date, commit, command), names in
        by_run.items()) + "."
    rows = [f"## Training (batch 32 x block 128 = {t['tokens_per_step']} tokens/step)", "",
            f"Time per step = (best {long_}-step run - best {short}-step run) / {long_ - short}, over {rounds} "
            "interleaved round(s), each run a fresh process, timed around the system's own train call "
            "(lmcore train_model, Trainer.train, Simple Transformers train_model; the feature cache is warm, and "
            "each compiled system ran once before, so inductor's cache is too); the same difference of "
            "whole-process wall times is shown beside it. Every peer is shown at its best settings beside its "
            "default: the Trainer with its own `bf16=True` (where the CPU has native bf16) and `torch_compile=True`."
            + provenance,
            "",
            "Utilisation, both against the measured matmul peak of the dtype the row computes in: **MFU** = model "
            "FLOPs/token (bench/flops.py: 6 · (non-embedding params + LM head d·V) + 12 · L · T · d, the formula of "
            "the PaLM paper: the vocabulary projection counted at every position) × tokens/s ÷ peak; **HFU** = the "
            "FLOPs the run executes per position (torch's FLOP counter over one forward and backward pass of what "
            "the system runs: lmcore projects only the masked 15% of positions for MLM and the ELECTRA generator, "
            "the peers every position) × tokens/s ÷ peak. \"lmcore is\": lmcore's default row's tokens/s over this "
            "row's. Peak RSS: the largest of the system's runs.", "",
            "| config | system | s/step | s/step (wall) | tokens/s | lmcore is | computes in | MFU | HFU | "
            "peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    by = {(row["setup"], row["system"]): row for row in t["rows"]}
    overstated = formula_only = False
    for row in t["rows"]:
        base = by.get((row["setup"], "lmcore"), {}).get("tokens_per_s")
        rel = base / row["tokens_per_s"] if base and row["tokens_per_s"] else None
        dtype, mfu, hfu = compute_dtype(row["system"], machine), None, None
        if peak and row["tokens_per_s"]:
            mfu = row["flops_per_token"] * row["tokens_per_s"] / 1e9 / peak[f"{dtype}_gflops"]
            executed = row.get("executed_flops_per_token")
            hfu = executed * row["tokens_per_s"] / 1e9 / peak[f"{dtype}_gflops"] if executed else None
            overstated |= (hfu or 0) > 1
            formula_only |= (mfu or 0) > 1 >= (hfu or 0)
        row["hfu"], row["mfu"] = hfu, mfu
        rows.append(f"| {row['setup']} | {_name(row['system'], machine)} | {row['per_step_s']:.3f} | "
                    f"{row.get('per_step_wall_s', float('nan')):.3f} | {_fmt(row['tokens_per_s'])} | "
                    f"{'1.00x' if row['system'] == 'lmcore' else _x(rel)} | {dtype} | "
                    f"{_fmt(mfu if mfu is None or mfu <= 1 else None, '.1%')} | "
                    f"{_fmt(hfu if hfu is None or hfu <= 1 else None, '.1%')} | {row['peak_rss_mb']:,.0f} |")
    if overstated:
        rows += ["", "**Caution:** a row above 100% of its dtype's peak (shown n/a) means the peak was measured "
                     "while other work held the cores; utilisation figures from this session overstate."]
    if formula_only:
        rows += ["", "An MFU shown n/a beside an HFU under 100%: the formula's FLOPs per token, which count the "
                     "vocabulary projection at every position, exceed what the peak allows at that speed, because "
                     "the row projects only the masked positions; its HFU is what the hardware did."]
    gpu = machine.get("device") == "cuda"
    if not gpu:  # the GPU quick bench runs lmcore alone: the peer targets are the CPU tables'
        _speed_targets(t, by, targets, machine)
    for setup, need in (("BERT-MLM", 0.60), ("GPT-2-CLM", 0.50), ("ELECTRA", 0.60)):
        row = by.get((setup, "lmcore"))
        hfu = row.get("hfu") if row else None
        # The utilisation targets are stated for the CPU at the bench's shapes; on a GPU the figure is one to read.
        targets.append((f"{setup} lmcore hardware FLOPs utilisation >= {need:.0%} of its dtype's matmul peak"
                        + (" (a CPU target)" if gpu else ""),
                        "not run" if hfu is None else f"{hfu:.1%} (MFU {row['mfu']:.1%})",
                        None if hfu is None or hfu > 1 or gpu else hfu >= need))
    compiled = _compiled(t, by, targets)
    return "\n".join(rows + ([""] + compiled if compiled else []))


def _speed_targets(t: dict, by: dict, targets, machine: dict) -> None:
    """lmcore's default against the fastest peer row of each objective, and its fp32 path against the Trainer's."""
    native = native_bf16_machine(machine)
    for setup in ("BERT-MLM", "GPT-2-CLM", "ELECTRA"):
        ours = by.get((setup, "lmcore"))
        peers = [row for (name, system), row in by.items() if name == setup and not system.startswith("lmcore")
                 and row["tokens_per_s"]]
        label = f"{setup} lmcore tokens/s >= 1.5x the fastest peer row"
        if not ours or not peers or not ours["tokens_per_s"]:
            targets.append((label, "not run", None))
            continue
        best = max(peers, key=lambda row: row["tokens_per_s"])
        ratio = ours["tokens_per_s"] / best["tokens_per_s"]
        if not native:  # the issue states this target for CPUs with native bf16; here it is a figure to read
            label += " (stated for CPUs with native bf16)"
        targets.append((label, f"{ratio:.2f}x ({_name(best['system'], machine)})", ratio >= 1.5 if native else None))
    for setup in ("BERT-MLM", "GPT-2-CLM"):
        # Without native bf16 lmcore's default is its fp32 path: either row measures it.
        a = by.get((setup, "lmcore-fp32")) or (None if native else by.get((setup, "lmcore")))
        p = by.get((setup, "trainer"))
        label = (f"{setup} lmcore fp32 tokens/s >= 1.5x Trainer fp32"
                 + (" (the AVX2-only target, measured on this CPU's AVX-512 fp32 kernels; an AVX2-only CPU's own run "
                    "is in the section on CPUs without native bf16)" if native else ""))
        if a and p and a["tokens_per_s"] and p["tokens_per_s"]:
            ratio = a["tokens_per_s"] / p["tokens_per_s"]
            targets.append((label, f"{ratio:.2f}x", ratio >= 1.5))
        else:
            targets.append((label, "not run", None))


def _compiled(t: dict, by: dict, targets) -> list[str]:
    """The compiled path against lmcore eager in the same dtype: per step, the warm-up (cold: the first run of
    these shapes on this machine; warm: inductor's cache already holds them), and a whole run of
    COMPILE_RUN_STEPS steps with the cold warm-up included."""
    lines = []
    for setup in ("BERT-MLM", "GPT-2-CLM", "ELECTRA"):
        eager, comp = by.get((setup, "lmcore")), by.get((setup, "lmcore-compile"))
        if not eager or not comp or not eager["tokens_per_s"] or not comp["tokens_per_s"]:
            continue
        cold = (comp.get("cold") or {}).get("compile_warmup_s")
        warm = comp.get("compile_warmup_s")
        n = COMPILE_RUN_STEPS
        whole = n * eager["per_step_s"] / (n * comp["per_step_s"] + (cold or 0.0))
        gain = eager["per_step_s"] - comp["per_step_s"]
        earn = f"{cold / gain:,.0f}" if cold and gain > 0 else "never"
        lines.append(f"| {setup} | {eager['per_step_s']:.3f} | {comp['per_step_s']:.3f} | "
                     f"{eager['per_step_s'] / comp['per_step_s']:.2f}x | {_fmt(cold, '.1f')} | {_fmt(warm, '.1f')} | "
                     f"{whole:.2f}x | {earn} |")
        targets.append((f"{setup} compiled >= 1.2x lmcore eager over {n} steps, warm-up included (where compiling "
                        "pays)", f"{whole:.2f}x", None if whole < 1.0 else whole >= 1.2))
    if not lines:
        return []
    return ["### Compiled path (`compile=True`) against lmcore eager, same dtype", "",
            "| config | eager s/step | compiled s/step | per step | warm-up cold s | warm-up, cache warm s | "
            f"{COMPILE_RUN_STEPS} steps incl. cold warm-up | steps to earn back the cold warm-up |",
            "|---|---|---|---|---|---|---|---|"] + lines + [
            "", "Warm-up: the first compiled step's time less the second's, as the engine reports it "
            "(`training_details[\"compile_warmup_s\"]`); cold in a process whose shapes inductor's cache did not "
            "hold yet, warm the smallest over the timed runs. A target marked n/a is one where compiling loses per "
            "step: it does not pay on this device, and `compile=\"auto\"` chooses eager there."]


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
    rows = ["## Quality: held-out perplexity, lmcore default vs the fp32 path (mixed_precision=\"no\"), over seeds", "",
            "Trained on 95% of the sample corpus, evaluated on the other 5% plus the sample's eval file; learning "
            "rate 1e-3, 10% warm-up; each seed sets initialisation, data order, masks and dropout. ELECTRA: the "
            "generator's perplexity. Rule: the default (bf16 on this CPU) is accepted when its mean is at most 2% "
            "above fp32's, or above it by at most one pooled standard deviation (sqrt of the mean of the two "
            "variances).", "",
            "| config | steps | seeds | default mean ± sd | fp32 mean ± sd | difference | pooled sd | accepted |",
            "|---|---|---|---|---|---|---|---|"]
    for row in q["rows"]:
        if "seeds" not in row:  # a single-seed row of an older run
            continue
        rows.append(f"| {row['setup']} | {row['steps']} | {len(row['seeds'])} | {row['default']:.2f} ± "
                    f"{row['default_std']:.2f} | {row['fp32']:.2f} ± {row['fp32_std']:.2f} | {row['diff_pct']:+.2f}% | "
                    f"{row['pooled_std']:.2f} | {'yes' if row['accepted'] else '**no**'} |")
        targets.append((f"{row['setup']} default perplexity within the rule against fp32 ({len(row['seeds'])} seeds, "
                        f"{row['steps']} steps)", f"{row['diff_pct']:+.2f}% (pooled sd {row['pooled_std']:.2f})",
                        row["accepted"]))
    rows += ["", "Per seed (default / fp32): " + "; ".join(
        f"{row['setup']}: " + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(row["default_runs"], row["fp32_runs"]))
        for row in q["rows"] if "seeds" in row)]
    return "\n".join(rows)
