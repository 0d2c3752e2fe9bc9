"""How lmcore's training cost grows: tokens/s and utilisation against model width, sequence length and ranks.

    python bench/scaling.py --write-results          # three plots (bench/scaling-*.png) and a RESULTS.md section
    python bench/scaling.py --quick                  # smoke run: two tiny points per curve, nothing written
    python bench/scaling.py --render --notes N.json  # re-render the section with the sentences on each curve

BERT-MLM at lmcore's defaults (bf16 where the CPU has it natively), the bench's corpus and tokenizer. Each point is
two fresh processes, a short and a long run, and s/step their difference (bench/run.py's method: start-up, model
building and the final save cancel). Utilisation against the measured matmul peak of the dtype the run computes
in: HFU from the FLOPs the engine executes (its `flops` job), MFU from the model FLOPs formula of bench/flops.py.
- width: hidden 128 -> 768 at 4 layers (64-wide heads, FFN 4x), block 128, batch 32;
- sequence: block 128 -> 512 at hidden 256, 4096 tokens a step (batch 32 -> 8);
- ranks: 1 and 2 processes (torchrun, gloo; each its share of the cores), batch 32 per rank.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import PEERS, Setup  # noqa: E402
from bench.run import Bench, machine, native_bf16, parse, section_peak  # noqa: E402

BENCH = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bert(hidden: int, layers: int = 4) -> Setup:
    return Setup("BERT-MLM", "bert", True, {"hidden_size": hidden, "num_hidden_layers": layers,
                                            "num_attention_heads": max(1, hidden // 64),
                                            "intermediate_size": 4 * hidden})


def model_flops_per_token(setup: Setup, block: int) -> float:
    """bench/flops.py's formula at another block length (its attention term grows with the block)."""
    from bench import flops

    saved = flops.BLOCK
    flops.BLOCK = block
    try:
        return flops.flops_per_token(setup)
    finally:
        flops.BLOCK = saved


def measure(b: Bench, setup: Setup, block: int, batch: int, ranks: int, steps: tuple[int, int], peak: dict,
            rounds: int = 2) -> dict:
    short, long_ = steps
    times: dict[int, float] = {}
    for _ in range(rounds):  # the best of `rounds` runs of each length: another process on the cores only slows one
        for n in (short, long_):
            kw = {"steps": n, "out": b.work / f"out-{setup.config['hidden_size']}-{block}-{ranks}", "block": block,
                  "batch": batch}
            if ranks == 1:
                m = b.lmcore("train", setup, **kw)
            else:
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
                       str(PEERS / "lmcore_run.py"), "train"]
                m = b._worker(cmd, setup, kw, env={"OMP_NUM_THREADS": "1"})
            times[n] = min(times.get(n, float("inf")), m.result["train_s"])
    per_step = (times[long_] - times[short]) / (long_ - short)
    tokens = batch * block * ranks
    executed = b.lmcore("flops", setup, block=block, batch=batch).result["flops_per_position"]
    dtype = "bf16" if native_bf16() else "fp32"
    gflops = peak[f"{dtype}_gflops"]
    tps = tokens / per_step if per_step > 0 else None
    point = {"hidden": setup.config["hidden_size"], "block": block, "batch": batch, "ranks": ranks,
             "per_step_s": per_step, "tokens_per_s": tps, "dtype": dtype,
             "hfu": executed * tps / 1e9 / gflops if tps else None,
             "mfu": model_flops_per_token(setup, block) * tps / 1e9 / gflops if tps else None}
    log(f"hidden {point['hidden']} block {block} batch {batch} ranks {ranks}: {per_step:.3f} s/step, "
        f"{tps or 0:,.0f} tokens/s, HFU {100 * (point['hfu'] or 0):.1f}%")
    return point


def plot(points: list[dict], x: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, left = plt.subplots(figsize=(6, 3.6))
    xs = [p[x] for p in points]
    left.plot(xs, [p["tokens_per_s"] or 0 for p in points], "o-", color="tab:blue", label="tokens/s")
    left.set_xlabel(x)
    left.set_ylabel("tokens/s", color="tab:blue")
    left.set_xticks(xs)
    right = left.twinx()
    right.plot(xs, [100 * (p["hfu"] or 0) for p in points], "s--", color="tab:red", label="HFU %")
    right.plot(xs, [100 * (p["mfu"] or 0) for p in points], "^:", color="tab:orange", label="MFU %")
    right.set_ylabel("% of matmul peak", color="tab:red")
    right.set_ylim(0, 100)
    left.set_title(title, fontsize=9)
    fig.legend(loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(curves: dict) -> None:
    plot(curves["width"], "hidden", "BERT-MLM, 4 layers, block 128: width", BENCH / "scaling-width.png")
    plot(curves["sequence"], "block", "BERT-MLM, hidden 256, 4096 tokens/step: sequence length",
         BENCH / "scaling-sequence.png")
    plot(curves["ranks"], "ranks", "BERT-MLM, hidden 256: ranks on 2 cores", BENCH / "scaling-ranks.png")


def section(r: dict) -> str:
    m = r["machine"]

    def table(points, x):
        rows = [f"| {x} | s/step | tokens/s | HFU | MFU |", "|---|---|---|---|---|"]
        rows += [f"| {p[x]} | {p['per_step_s']:.3f} | {p['tokens_per_s'] or 0:,.0f} | {100 * (p['hfu'] or 0):.1f}% | "
                 f"{100 * (p['mfu'] or 0):.1f}% |" for p in points]
        return "\n".join(rows)

    c = r["curves"]
    return "\n".join([
        "<!-- scaling: begin -->", "## How cost grows (bench/scaling.py)", "",
        f"`{r['command']}`, {r['date']}, lmcore {m['lmcore_commit']}; {m['cpu']}, {m['cores']} cores, CPU flags "
        f"{', '.join(m['cpu_flags'])}; BERT-MLM, lmcore defaults (computes in {c['width'][0]['dtype']}), s/step from "
        + (f"the best of {r['rounds']} {r['steps'][0]}- and {r['steps'][1]}-step runs" if r.get("rounds", 1) > 1 else
           f"one {r['steps'][0]}- and one {r['steps'][1]}-step run (single runs on shared cores: read the trends, "
           "not the last digit)") + ". Utilisation against the "
        f"measured {c['width'][0]['dtype']} matmul peak.", "",
        "### Width (4 layers, block 128, batch 32)", "", "![width](scaling-width.png)", "", table(c["width"], "hidden"),
        "", r.get("width_note", ""), "",
        "### Sequence length (hidden 256, 4096 tokens a step)", "", "![sequence](scaling-sequence.png)", "",
        table(c["sequence"], "block"), "", r.get("sequence_note", ""), "",
        "### Ranks (torchrun, gloo, batch 32 per rank; the 2 cores shared out)", "", "![ranks](scaling-ranks.png)", "",
        table(c["ranks"], "ranks"), "", r.get("ranks_note", ""), "", "<!-- scaling: end -->"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--write-results", action="store_true")
    p.add_argument("--steps", default=None, help="SHORT,LONG (default 2,14; --quick 1,2)")
    p.add_argument("--rounds", type=int, default=None, help="runs of each length per point, best taken (default 2; "
                   "--quick 1)")
    p.add_argument("--notes", default=None, help="JSON file of width_note / sequence_note / ranks_note sentences")
    p.add_argument("--render", action="store_true", help="only re-render the section from bench/scaling.json")
    ns = p.parse_args(argv)
    if ns.render:
        r = json.loads((BENCH / "scaling.json").read_text())
        r.update(json.loads(Path(ns.notes).read_text()) if ns.notes else {})
        plots(r["curves"])
        (BENCH / "scaling.json").write_text(json.dumps(r, indent=2))
        common.write_marked_section(section(r))
        return 0
    steps = tuple(int(x) for x in (ns.steps or ("1,2" if ns.quick else "2,14")).split(","))
    rounds = ns.rounds or (1 if ns.quick else 2)
    widths = (32, 64) if ns.quick else (128, 256, 512, 768)
    blocks = (32, 64) if ns.quick else (128, 256, 512)
    bench_ns = parse(["--quick", "--no-install"] if ns.quick else ["--no-install"])
    with tempfile.TemporaryDirectory(prefix="lmcore-scaling-") as tmp:
        b = Bench(bench_ns, Path(tmp))
        peak = section_peak(b)
        curves = {"width": [measure(b, bert(h), 128 if not ns.quick else 32, 32, 1, steps, peak, rounds)
                            for h in widths],
                  "sequence": [measure(b, bert(256 if not ns.quick else 32), blk, 4096 // blk, 1, steps, peak,
                                       rounds)
                               for blk in blocks],
                  "ranks": [measure(b, bert(256 if not ns.quick else 32), 128 if not ns.quick else 32, 32, r, steps,
                                    peak, rounds) for r in (1, 2)]}
    r = {"machine": machine(), "date": datetime.date.today().isoformat(), "steps": steps, "rounds": rounds,
         "curves": curves,
         "peak": peak, "command": "python bench/scaling.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if ns.notes:
        r.update(json.loads(Path(ns.notes).read_text()))
    print(json.dumps(r, indent=2))
    if ns.write_results and not ns.quick:
        plots(curves)
        (BENCH / "scaling.json").write_text(json.dumps(r, indent=2))
        common.write_marked_section(section(r))
        log("wrote bench/scaling-*.png, bench/scaling.json and the RESULTS.md section")
    return 0


if __name__ == "__main__":
    sys.exit(main())
