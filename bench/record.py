"""Where a bench run's figures are recorded: bench/results.json and RESULTS.md for the main table (a CPU with
AVX512-BF16), a JSON file and a RESULTS.md section of its own for a CPU of another class (report.cpu_class) and for
a GPU; recorded sections a run did not measure are kept, and train rounds of the same machine and engine pooled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench import common, report
from bench.common import BATCH, BLOCK, log

QUICK_CPU_NOT_RECORDED = ("--quick on the CPU is a smoke test (tiny models and corpora): its figures are never written "
                          "to bench/RESULTS.md; drop --quick to measure, or drop --write-results to smoke-test")


def seconds_per_step(times: dict[int, list], short: int, long_: int) -> float:
    """(best long run - best short run) / (long - short): the fixed costs of a run cancel."""
    return (min(times[long_]) - min(times[short])) / (long_ - short)


def best_peak(into: dict, other: dict) -> dict:
    """The best of two peak measurements, per dtype (other work on the cores only ever lowers a measurement)."""
    if other["bf16_gflops"] > into["bf16_gflops"]:  # the square that figure was measured on goes with it
        into["bf16_size"] = other.get("bf16_size", other.get("size"))
    for key in ("fp32_gflops", "bf16_gflops"):
        into[key] = max(into[key], other[key])
    return into


def write_where_it_belongs(results: dict) -> None:
    """A GPU's figures to their section, a CPU's of another class than the main table's (without native bf16,
    with AMX, or with full-width bf16 by its measured peak) to theirs, the rest to the main table: by the machine
    the results record, not the one writing them (--merge-json brings figures from elsewhere). A CPU smoke test's
    (--quick) figures are refused: tiny models must never stand in a table of measurements."""
    if results["machine"].get("device") == "cuda":
        write_gpu_results(results)
        return
    if results.get("quick"):
        raise SystemExit(f"bench/run.py: {QUICK_CPU_NOT_RECORDED}")
    kind = report.cpu_class(results["machine"], results["sections"].get("peak"))
    if kind in CLASS_SECTIONS:
        write_class_results(results, kind)
    else:
        write_results(results)


def render_recorded() -> None:
    """RESULTS.md again from the recorded figures (--render), every CPU class's section and the GPU's included."""
    write_markdown(json.loads((common.BENCH / "results.json").read_text()))
    for kind, (path, *_) in CLASS_SECTIONS.items():
        if path.exists():
            write_class_section(json.loads(path.read_text()), kind)
    if (common.BENCH / "results-cuda.json").exists():
        write_gpu_section(json.loads((common.BENCH / "results-cuda.json").read_text()))


def write_gpu_results(results: dict) -> None:
    """A GPU run's figures: bench/results-cuda.json and their own RESULTS.md section (the CPU figures stay). A
    later run on the same card merges in by write_results' rules: a `--systems lmcore-compile` run adds its rows
    to the recorded eager ones."""
    record(results, common.BENCH / "results-cuda.json", write_gpu_section)


def write_gpu_section(results: dict) -> None:
    body = report.render(results).split("\n", 1)[1].replace("\n## ", "\n### ")
    common.write_marked_section("<!-- gpu_quick: begin -->\n## GPU quick bench (`bench/run.py --device cuda "
                                f"--quick`), {results['machine'].get('gpu')}\n{body}\n<!-- gpu_quick: end -->")
    log("wrote the GPU section of bench/RESULTS.md")


NO_BF16_JSON = common.BENCH / "results-no-bf16.json"
"""A CPU without native bf16's figures (lmcore's default computes in fp32 there), kept beside the main table's."""
CLASS_SECTIONS = {
    "no-bf16": (NO_BF16_JSON, "cpu_no_bf16", "On a CPU without native bf16 (lmcore's default computes in fp32)",
                "The same bench on a CPU with no AVX512-BF16 or AMX, where `mixed_precision=\"auto\"` means fp32 and "
                "the Trainer has no native bf16 to turn on: lmcore's default against the Trainer in fp32, compiled "
                "and not."),
    "amx": (common.BENCH / "results-amx.json", "cpu_amx", "On a CPU with AMX (bf16 matmuls on tiles)",
            "The same bench on a CPU with AMX-BF16 (Intel Xeon, Sapphire Rapids or later), where a bf16 matmul "
            "runs several times faster than fp32 (about twice on the main table's AVX512-BF16 CPU): the matmuls "
            "shrink and what surrounds them decides the ratios. lmcore's default (bf16) against every peer at "
            "its best."),
    "wide-bf16": (common.BENCH / "results-wide-bf16.json", "cpu_wide_bf16",
                  "On a CPU whose AVX512-BF16 runs at full width (bf16 matmul peak 3x fp32 or more)",
                  "The same bench on a CPU with the main table's flags (AVX512-BF16, no AMX) whose measured bf16 "
                  "matmul peak is several times its fp32 one, where the main table's CPU gives about twice (an AMD "
                  "EPYC of family 26, Zen 5, here): the bf16 matmuls shrink and what surrounds them decides the "
                  "ratios. lmcore's default (bf16) against every peer at its best."),
}
"""Sections of RESULTS.md for CPUs of another class than the main table's (report.cpu_class), each with its JSON."""


def write_class_results(results: dict, kind: str) -> None:
    """A run on a CPU of another class than the main table's (report.cpu_class): without native bf16 the issue
    states its own target (lmcore's fp32 path against the Trainer's) and "lmcore" computes in fp32; with AMX the
    bf16 peak is several times the main machine's and every ratio moves. Such rows cannot share a table with the
    main machine's, so their figures go to a JSON file and a RESULTS.md section of their own; the main table
    stays. A later run on such a CPU merges into them by the same rules as write_results."""
    record(results, CLASS_SECTIONS[kind][0], lambda merged: write_class_section(merged, kind))


def write_class_section(results: dict, kind: str) -> None:
    path, marker, title, intro = CLASS_SECTIONS[kind]
    body = report.render(results).split("\n", 1)[1].replace("\n## ", "\n### ")
    common.write_marked_section(f"<!-- {marker}: begin -->\n## {title}\n\n{intro} Figures also in "
                                f"`bench/{path.name}`.\n{body}\n<!-- {marker}: end -->")
    log(f"wrote the section of bench/RESULTS.md for a CPU of class {kind}")


def merge_train_rounds(old: dict | None, new: dict | None, same_machine: bool = True,
                       partial: bool = False) -> None:
    """Fold a re-run of the train section into the recorded one (`new` is updated in place). Rows of systems not
    re-run (--systems) stay as recorded, each with the command, date and engine commit that measured it: a peer's
    figures do not depend on lmcore's code. A row re-run with the same step counts on the same engine commit adds
    its runs to the recorded rounds (the best run of each kind is what counts, so more rounds only remove noise);
    an older engine's best run never stands in for the current one's. Nothing is pooled or kept across machines;
    a partial re-run that cannot be merged (other steps, models or machine) is refused before anything is written.
    """
    if not old or not new:
        return
    if old.get("steps") != new["steps"] or old.get("setups") != new["setups"] or not same_machine:
        if partial:
            raise SystemExit("bench: a --systems re-run merges into the recorded train section only with its steps "
                             f"({old.get('steps')}), models and machine: re-run every system, or use those --steps")
        return
    for row in new["rows"]:
        row.setdefault("measured", new.get("measured"))
    for row in old["rows"]:
        row.setdefault("measured", old.get("measured"))
    commit = new.get("measured", {}).get("commit", "")
    rerun = {(row["system"], row["setup"]) for row in new["rows"]}
    kept = [row for row in old["rows"] if (row["system"], row["setup"]) not in rerun]
    short, long_ = new["steps"]
    recorded = {(row["system"], row["setup"]): row for row in old["rows"]}
    pooled = 0
    for row in new["rows"]:
        before = recorded.get((row["system"], row["setup"]))
        if before is None or (before.get("measured") or {}).get("commit") != commit or \
                commit.endswith(("+dirty", "unknown")):
            continue
        pooled = max(pooled, len(before.get("train_call_s", {}).get(str(short), [])))
        for clock in ("walls", "train_call_s"):
            for k in row[clock]:
                row[clock][k] = before.get(clock, {}).get(k, []) + row[clock][k]
        as_int = {clock: {int(k): v for k, v in row[clock].items()} for clock in ("walls", "train_call_s")}
        row["per_step_s"] = seconds_per_step(as_int["train_call_s"], short, long_)
        row["per_step_wall_s"] = seconds_per_step(as_int["walls"], short, long_)
        row["tokens_per_s"] = BATCH * BLOCK / row["per_step_s"] if row["per_step_s"] > 0 else None
        row["peak_rss_mb"] = max(row["peak_rss_mb"], before["peak_rss_mb"])
        for key in ("cold", "compile_warmup_s"):
            if before.get(key) and not row.get(key):
                row[key] = before[key]
    order = [(row["system"], row["setup"]) for row in old["rows"]]
    rows = kept + new["rows"]
    rows.sort(key=lambda r: order.index((r["system"], r["setup"])) if (r["system"], r["setup"]) in order
              else len(order))
    new["rows"] = rows
    new["rounds"] = pooled + new["rounds"]


def merge_quality_rows(old: dict | None, new: dict | None) -> None:
    """Configurations measured before and not re-measured now stay in the quality table."""
    if old and new:
        done = {row["setup"] for row in new["rows"]}
        new["rows"] = [row for row in old["rows"] if row["setup"] not in done] + new["rows"]


def write_markdown(results: dict) -> None:
    """RESULTS.md from the figures; sections other bench scripts keep between `<!-- name: begin -->` and
    `<!-- name: end -->` markers stay as they are."""
    md = common.BENCH / "RESULTS.md"
    kept = re.findall(r"<!-- [\w-]+: begin -->.*?<!-- [\w-]+: end -->", md.read_text(), re.S) if md.exists() else []
    md.write_text(report.render(results) + "".join(f"\n{block}\n" for block in kept))
    log("wrote bench/RESULTS.md")


def write_results(results: dict) -> None:
    """bench/results.json and RESULTS.md; sections not run this time are kept from the recorded results (each
    section remembers the command and date that measured it)."""
    record(results, common.BENCH / "results.json", write_markdown)


def record(results: dict, path: Path, write_section) -> None:
    """Stamp each section with what measured it, fold in the figures recorded at `path`, write them there, then
    the RESULTS.md part that shows them (`write_section(results)`)."""
    stamp_sections(results)
    merge_recorded(results, path)
    path.write_text(json.dumps(results, indent=2))
    write_section(results)
    log(f"wrote bench/{path.name}")


def stamp_sections(results: dict) -> None:
    """Each section remembers the command, date and engine commit that measured it."""
    for section in results["sections"].values():
        section["measured"] = {"command": results["command"], "date": results["date"],
                               "commit": results["machine"]["lmcore_commit"]}


def merge_recorded(results: dict, path: Path) -> None:
    """Fold the figures recorded at `path` into `results` (in place): sections not run this time are kept, train
    rounds of the same machine and engine pool, notes about a session's conditions lapse with its figures."""
    gpu = results["machine"].get("device") == "cuda"  # on a GPU, --quick is the measurement
    if path.exists() and (gpu or not results["quick"]):
        old = json.loads(path.read_text())
        if gpu or not old.get("quick"):
            # Notes about a session's conditions lapse once its training figures are re-measured.
            # A re-run of some systems or models only (--systems, --setups) keeps them: the other rows
            # stand as measured.
            partial = "--systems" in results["command"] or "--setups" in results["command"]
            kept = [] if "train" in results["sections"] and not partial else old.get("notes", [])
            same_machine = all(old.get("machine", {}).get(k) == results["machine"].get(k)
                               for k in ("cpu", "cpu_flags", "cores", "torch", "transformers", "gpu"))
            merge_train_rounds(old["sections"].get("train"), results["sections"].get("train"), same_machine,
                               partial)
            merge_quality_rows(old["sections"].get("quality"), results["sections"].get("quality"))
            peaks = [p for p in (old["sections"].get("peak"), results["sections"].get("peak")) if p]
            results["sections"] = {**old.get("sections", {}), **results["sections"]}
            if len(peaks) == 2 and same_machine:  # the machine's peak: the best of its sessions' measurements
                results["sections"]["peak"] = best_peak(*peaks)
            results["notes"] = list(dict.fromkeys(kept + results["notes"]))
