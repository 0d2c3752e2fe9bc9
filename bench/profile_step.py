"""Where a training step's time goes: a torch.profiler table of lmcore's steps at the bench's shapes, by operator.

    python bench/profile_step.py --write-results [--notes N.json]   # RESULTS.md section (the operators above 5%)
    python bench/profile_step.py --setup GPT-2-CLM --precision no   # one configuration, printed
    python bench/profile_step.py --device cuda --setup ELECTRA --steps 30 --json p.json   # on a GPU, printed

Each configuration trains `--steps` steps through `LanguageModelingModel.train_model` (features cached by a first
run) under torch.profiler; operators are grouped by their own (self) CPU time. Matrix products and the attention
kernels are the work itself; what the section lists is everything else at 5% of the step or more, with what
was done about it (`--notes`: a JSON object from "<config> <precision>" to a sentence).

On a GPU (`--device cuda`) the operators are also ranked by their own device time, and the row says how busy the
device was (its kernels' time over the profiled wall time: far below 1, the host side bounds the step) and how
often the host waited on it (`cudaStreamSynchronize`). Every row counts the host's reads of tensor values
(`aten::nonzero`, from indexing with a boolean mask, and `aten::_local_scalar_dense`, from `.item()`-like reads): a
wait where the tensor is on a GPU, nothing where it is on the host (the batch preparation's reads are of host
tensors). GPU and --quick rows are printed and written with --json, never to RESULTS.md's CPU section.
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
from bench.run import machine  # noqa: E402

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
          "mkldnn", "aten::_addmm_activation")
ATTENTION = ("aten::_softmax", "aten::_softmax_backward_data", "aten::_scaled_dot_product", "aten::softmax")
CONFIGS = (("GPT-2-CLM", "no"), ("GPT-2-CLM", "auto"), ("BERT-MLM", "auto"), ("ELECTRA", "auto"))


SYNCS = ("aten::nonzero", "aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize")
"""Reads of a tensor's value by the host (a boolean-mask index, an `.item()`-like read) and CUDA's own waits."""


def profile(name: str, precision: str, steps: int, work: Path, device: str = "cpu", quick: bool = False) -> dict:
    import torch
    from torch.profiler import ProfilerActivity

    from bench.peers import lmcore_run

    setup = next(s for s in common.setups(quick) if s.name == name).to_json()
    corpus = str(common.__getattr__("SAMPLE"))
    ns = argparse.Namespace(setup=setup, cache=str(work / "cache"), out=str(work / f"out-{name}"), steps=steps,
                            lr=1e-3, mixed_precision=precision, tokenizer=None, compile=False, seed=None,
                            block=None, batch=None, device=device)
    lm = lmcore_run.build(setup, ns, train_files=[corpus])
    lm.train_model(corpus, output_dir=ns.out)  # builds the features; the profiled run finds them cached
    lm = lmcore_run.build(setup, ns, train_files=[corpus])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        lm.train_model(corpus, output_dir=ns.out)
    seconds = time.perf_counter() - start
    events = prof.key_averages()
    ops = _shares(events, "self_cpu_time_total")
    groups = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for key, share in ops:
        groups["matmul" if key.startswith(MATMUL) else "attention" if key.startswith(ATTENTION) else "other"] += share
    above = [(k, v) for k, v in ops if v >= 0.05 and not k.startswith(MATMUL + ATTENTION)]
    row = {"config": name, "precision": precision, "steps": steps, "seconds": seconds, "groups": groups,
           "top": ops[:12], "above_5pct": above, "device": device,
           "syncs_per_step": {e.key: e.count / steps for e in events if e.key in SYNCS}}
    if device == "cuda":
        busy = sum(e.self_device_time_total for e in events) / 1e6
        row.update(device_top=_shares(events, "self_device_time_total")[:12], device_busy=busy / seconds)
    return row


def _shares(events, attr: str) -> list[tuple[str, float]]:
    """(operator, its share of the summed `attr`), largest first."""
    total = sum(getattr(e, attr) for e in events) or 1.0
    return sorted(((e.key, getattr(e, attr) / total) for e in events), key=lambda kv: -kv[1])


def section(r: dict) -> str:
    m = r["machine"]
    lines = ["<!-- profile_step: begin -->", "## Where a step's time goes (bench/profile_step.py)", "",
             f"`{r['command']}`, {r['date']}, lmcore {m['lmcore_commit']}; {m['cpu']}, {m['cores']} cores, CPU flags "
             f"{', '.join(m['cpu_flags'])}. Self CPU time by operator over {r['rows'][0]['steps']} training steps "
             "(torch.profiler), the bench's shapes (batch 32 x block 128).", "",
             "| config | precision | matrix products | attention kernels | everything else | other operators at 5% "
             "or more |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        g = row["groups"]
        above = ", ".join(f"`{k}` {v:.1%}" for k, v in row["above_5pct"]) or "none"
        lines.append(f"| {row['config']} | {row['precision']} | {g['matmul']:.1%} | {g['attention']:.1%} | "
                     f"{g['other']:.1%} | {above} |")
    notes = r.get("notes", {})
    if notes:
        lines += [""] + [f"- **{k}**: {v}" for k, v in notes.items()]
    lines += ["", "<!-- profile_step: end -->"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setup", default=None, help="one configuration (BERT-MLM, GPT-2-CLM, ELECTRA)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--notes", default=None)
    p.add_argument("--write-results", action="store_true")
    p.add_argument("--render", action="store_true", help="re-render the section from bench/profile_step.json")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the models train")
    p.add_argument("--quick", action="store_true", help="the bench's tiny models (a smoke test; never written)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ns = p.parse_args(argv)
    if (ns.device == "cuda" or ns.quick) and ns.write_results:
        p.error("--write-results records the CPU's profile at the bench's shapes: use --json with --device cuda "
                "or --quick")
    path = common.BENCH / "profile_step.json"
    if ns.render:
        r = json.loads(path.read_text())
    else:
        configs = [(ns.setup, ns.precision)] if ns.setup else CONFIGS
        with tempfile.TemporaryDirectory(prefix="lmcore-profile-") as tmp:
            rows = [profile(name, precision, ns.steps, Path(tmp), ns.device, ns.quick) for name, precision in configs]
        r = {"machine": machine(), "date": datetime.date.today().isoformat(), "rows": rows,
             "command": "python bench/profile_step.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if ns.notes:
        r["notes"] = json.loads(Path(ns.notes).read_text())
    for row in r["rows"]:
        print(f"{row['config']} {row['precision']}: {row['seconds'] / row['steps']:.3f} s/step profiled; "
              + ", ".join(f"{k} {v:.1%}" for k, v in row["groups"].items()))
        for key, share in row["top"]:
            print(f"    {share:6.1%}  {key}")
        if "device_top" in row:
            print(f"  device busy {row['device_busy']:.0%} of the profiled time; host waits per step: "
                  + (", ".join(f"{k} {v:.1f}" for k, v in row["syncs_per_step"].items()) or "none"))
            for key, share in row["device_top"]:
                print(f"    {share:6.1%}  {key} (device time)")
    if ns.json:
        Path(ns.json).write_text(json.dumps(r, indent=2))
    if ns.write_results or ns.render:
        path.write_text(json.dumps(r, indent=2))
        common.write_marked_section(section(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
