"""The kernel choices the engine makes on the CPU, measured: attention (SDPA or eager) per compute dtype, and the
share of an ELECTRA step at BERT-base shapes spent drawing the generator's replacements.

    .venv/bin/python bench/cpu_kernels.py                    # prints the figures
    .venv/bin/python bench/cpu_kernels.py --write-results    # ... and records them in bench/RESULTS.md

Attention: the bench's BERT-MLM and GPT-2-CLM (hidden 256, 4 layers, 4 heads, block 128, batch 32, vocabulary
8000), one forward + backward per step on random token ids, in fp32 and (where the CPU has native bf16) under bf16
autocast, with `attn_implementation` "sdpa" and "eager". Each (model, dtype, kernel) runs 2 warm-up steps and then
`--steps` timed ones; the four kernels of a (model, dtype) are interleaved over `--rounds` rounds and the best
round's mean step counts: the kernels alone, with torch's own dropout masks.

    .venv/bin/python bench/cpu_kernels.py --engine --write-results   # the same choice through the engine

`--engine`: the choice as the engine makes it, the bench's three objectives trained through
`LanguageModelingModel.train_model` in the compute dtype `auto` picks on this CPU (its dropout masks, its chunked
loss), every run a fresh process with the attention kernel forced (bench/peers/lmcore_run.py --attention); s/step =
(best 14-step run - best 2-step run) / 12 over interleaved rounds. Recorded beside the kernel table with its own
machine and date (`engine` in bench/cpu_kernels.json): this is the figure lmcore.training.hardware.choose_attention's
rule (eager on the CPU) stands on. The ELECTRA figure is bench/electra_sampling.py's (a fresh process).
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers as hf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_marked_section  # noqa: E402
from lmcore.training import hardware  # noqa: E402
from lmcore.training.precision import resolve as resolve_precision  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "cpu_kernels.json"
BEGIN, END = "<!-- cpu_kernels: begin -->", "<!-- cpu_kernels: end -->"
VOCAB, BATCH, BLOCK = 8000, 32, 128
TIE = 0.03
"""Two kernels within 3% of each other are a tie: less than the run-to-run spread of a shared 2-core machine."""


def model_for(name: str) -> torch.nn.Module:
    if name == "BERT-MLM":
        config = hf.BertConfig(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                               intermediate_size=1024, max_position_embeddings=BLOCK)
        return hf.BertForMaskedLM(config)
    config = hf.GPT2Config(vocab_size=VOCAB, n_embd=256, n_layer=4, n_head=4, n_inner=1024, n_positions=BLOCK)
    return hf.GPT2LMHeadModel(config)


def step_time(model, precision: str, steps: int) -> float:
    ids = torch.randint(5, VOCAB, (BATCH, BLOCK), generator=torch.Generator().manual_seed(0))
    resolved = resolve_precision("cpu", precision)
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        with resolved.autocast():
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def attention(ns) -> list[dict]:
    native = resolve_precision("cpu", "auto").autocast_dtype == torch.bfloat16
    out = []
    for name in ("BERT-MLM", "GPT-2-CLM"):
        for precision in ("no", "bf16") if native else ("no",):
            models = {}
            for kernel in ("sdpa", "eager"):
                torch.manual_seed(0)
                models[kernel] = model_for(name).train()
                models[kernel].set_attn_implementation(kernel)
            best = {k: float("inf") for k in models}
            for _ in range(ns.rounds):
                for kernel, model in models.items():
                    best[kernel] = min(best[kernel], step_time(model, precision, ns.steps))
            torch.manual_seed(0)
            chosen = hardware.choose_attention(model_for(name), resolve_precision("cpu", precision))
            row = judge({"model": name, "dtype": "bf16" if precision == "bf16" else "fp32", "sdpa_s": round(best["sdpa"], 4),
                         "eager_s": round(best["eager"], 4), "engine_chooses": chosen})
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def judge(row: dict) -> dict:
    """Which kernel was faster (a tie within TIE), and whether the engine's choice is that one (or a tie)."""
    sdpa, eager = row["sdpa_s"], row["eager_s"]
    faster = "tie" if max(sdpa, eager) / min(sdpa, eager) < 1 + TIE else ("sdpa" if sdpa < eager else "eager")
    return {**row, "faster": faster, "engine_right": faster in (row["engine_chooses"], "tie")}


def engine_attention(rounds: int, steps: tuple[int, int] = (2, 14)) -> dict:
    """SDPA against eager through the engine (module docstring), on this machine."""
    import tempfile

    from bench.run import Bench, machine, parse

    short, long_ = steps
    with tempfile.TemporaryDirectory(prefix="lmcore-attention-") as tmp:
        b = Bench(parse(["--no-install"]), Path(tmp))
        best: dict[tuple, float] = {}
        for _ in range(rounds):
            for setup in b.setups:
                for n in steps:
                    for kernel in ("sdpa", "eager"):
                        m = b.lmcore("train", setup, steps=n, attention=kernel, out=b.work / f"out-{setup.name}")
                        key = (setup.name, kernel, n)
                        best[key] = min(best.get(key, float("inf")), m.result["train_s"])
        rows = []
        for setup in b.setups:
            per = {k: (best[(setup.name, k, long_)] - best[(setup.name, k, short)]) / (long_ - short)
                   for k in ("sdpa", "eager")}
            row = judge({"model": setup.name, "dtype": "bf16" if resolve_precision("cpu", "auto").autocast_dtype
                         else "fp32", "sdpa_s": round(per["sdpa"], 4), "eager_s": round(per["eager"], 4),
                         "engine_chooses": hardware.choose_attention(model_for("BERT-MLM"),
                                                                     resolve_precision("cpu", "auto"))})
            print(json.dumps(row), flush=True)
            rows.append(row)
    m = machine()
    return {"date": datetime.date.today().isoformat(), "rounds": rounds, "steps": list(steps), "rows": rows,
            "machine": {"cpu": m["cpu"], "cores": m["cores"], "flags": cpu_flags(), "torch": m["torch"],
                        "lmcore_commit": m["lmcore_commit"]}}


def electra_profile(precision: str) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "electra_sampling.py"), "--precision", precision],
                          capture_output=True, text=True, check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)
    return row


def cpu_flags() -> list[str]:
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]


def render(r: dict) -> str:
    out = [BEGIN, "## CPU kernel choices (bench/cpu_kernels.py)", "",
           f"Attention, one forward + backward of the bench's models (batch {BATCH} x block {BLOCK}, vocabulary "
           f"{VOCAB}), best of {r['rounds']} interleaved rounds of {r['steps']} steps; the engine's choice is "
           "lmcore.training.hardware.choose_attention for that dtype.", "",
           "| model | dtype | SDPA s/step | eager s/step | faster | engine chooses |", "|---|---|---|---|---|---|"]
    for a in r["attention"]:
        out.append(f"| {a['model']} | {a['dtype']} | {a['sdpa_s']:.3f} | {a['eager_s']:.3f} | {a['faster']} "
                   f"(by {max(a['sdpa_s'], a['eager_s']) / min(a['sdpa_s'], a['eager_s']):.2f}x) | "
                   f"{a['engine_chooses']}{'' if a['engine_right'] else ' (**slower**)'} |")
    g = r.get("engine")
    if g:
        gm = g["machine"]
        short, long_ = g["steps"]
        out += ["", f"Through the engine (`python bench/cpu_kernels.py --engine --write-results`, {g['date']}, lmcore "
                f"{gm['lmcore_commit']}; {gm['cpu']}, {gm['cores']} cores, flags {', '.join(gm['flags'])}; torch "
                f"{gm['torch']}): the bench's objectives trained by `train_model` in the dtype `auto` picks there, its "
                f"dropout masks and chunked loss included, the kernel forced; s/step = (best {long_}-step run - best "
                f"{short}-step run) / {long_ - short}, {g['rounds']} interleaved rounds, every run a fresh process.", "",
                "| config | dtype | SDPA s/step | eager s/step | faster | engine chooses |", "|---|---|---|---|---|---|"]
        for a in g["rows"]:
            out.append(f"| {a['model']} | {a['dtype']} | {a['sdpa_s']:.3f} | {a['eager_s']:.3f} | {a['faster']} "
                       f"(by {max(a['sdpa_s'], a['eager_s']) / min(a['sdpa_s'], a['eager_s']):.2f}x) | "
                       f"{a['engine_chooses']}{'' if a['engine_right'] else ' (**slower**)'} |")
        if g.get("note"):
            out += ["", g["note"]]
    out += ["", "The kernels alone once had SDPA ahead in fp32 on an AVX2-only CPU (BERT-MLM 0.97 s/step against "
            "eager 1.216). In training, SDPA's CPU kernel draws its dropout mask with torch's `bernoulli_`, which "
            "the engine's own masks (`hardware.cpu_dropout`) replace only on the eager path; through the engine "
            "eager is the faster in fp32 there too for BERT and GPT-2. So the engine's rule: eager attention on "
            "the CPU in every dtype.", ""]
    e = r.get("electra")
    if e:
        out += [f"ELECTRA at BERT-base shapes (discriminator hidden 768, 12 layers, generator a quarter of its "
                f"width, vocabulary {e['vocab']:,}, block {e['block']}, batch {e['batch']}, {e['masked_positions']} "
                f"masked positions, mixed_precision={e['precision']!r}), one training step (prepare + forward + "
                f"backward): {e['step_s']:.2f} s, of which drawing the replacements (softmax, cumulative sum, one "
                f"uniform per masked position, on the model's device) {e['draw_s'] * 1000:.0f} ms = "
                f"{e['draw_share']:.2%}. The draw it replaced (host Gumbel noise for every masked position x "
                f"vocabulary cell, then argmax) takes {e['gumbel_draw_s'] * 1000:.0f} ms on the same shapes "
                f"({e['gumbel_share_of_step']:.2%} of the step).", ""]
    out.append(f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, flags {', '.join(r['machine']['flags'])}; "
               f"torch {r['machine']['torch']}. Date: {r['date']}. Command: `python bench/cpu_kernels.py "
               "--write-results`.")
    out.append(END)
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-electra", action="store_true")
    p.add_argument("--engine", action="store_true", help="only the choice through the engine (module docstring), "
                   "recorded beside the kernel table")
    p.add_argument("--note", default=None, help="with --engine: a paragraph under its table")
    p.add_argument("--write-results", action="store_true")
    p.add_argument("--render", action="store_true", help="only re-render RESULTS.md from bench/cpu_kernels.json")
    ns = p.parse_args()
    if ns.render:
        r = json.loads(RESULTS_JSON.read_text())
        # The engine's choice as the engine's code makes it now (the timings are the recorded ones).
        r["attention"] = [judge({**a, "engine_chooses": hardware.choose_attention(
            model_for(a["model"]), resolve_precision("cpu", "bf16" if a["dtype"] == "bf16" else "no"))})
            for a in r["attention"]]
        write(r)
        return 0
    if ns.engine:
        engine = engine_attention(ns.rounds)
        if ns.note:
            engine["note"] = ns.note
        if ns.write_results:
            if not RESULTS_JSON.exists():
                raise SystemExit("bench/cpu_kernels.py --engine --write-results: records beside the kernel table; "
                                 "run `python bench/cpu_kernels.py --write-results` first")
            r = json.loads(RESULTS_JSON.read_text())
            r["engine"] = engine
            write(r)
        return 0
    torch.set_num_threads(torch.get_num_threads())
    r = {"date": datetime.date.today().isoformat(), "steps": ns.steps, "rounds": ns.rounds,
         "machine": {"cpu": _cpu_name(), "cores": torch.get_num_threads(),
                     "flags": cpu_flags(), "torch": torch.__version__},
         "attention": attention(ns)}
    if not ns.skip_electra:
        r["electra"] = electra_profile("auto")
    if RESULTS_JSON.exists() and "engine" in json.loads(RESULTS_JSON.read_text()):  # measured by --engine: kept
        r["engine"] = json.loads(RESULTS_JSON.read_text())["engine"]
    if ns.write_results:
        write(r)
    return 0


def write(r: dict) -> None:
    RESULTS_JSON.write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {write_marked_section(render(r))} and {RESULTS_JSON}")


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
