"""Tokenizing throughput per corpus container and worker count, and peak memory of a large Parquet preparation.

The same rows (lines of the sample corpus in a seeded random order, --mb MiB of text) are written as a text file,
JSON Lines, CSV, Parquet, an Arrow file, a folder written by `Dataset.save_to_disk`, and a dataset in a temporary
`datasets` cache read back by name. For each container and each worker count (`process_count`), a fresh process
builds the features (`load_features`, dataset_type simple, block 128, the bench's 8000-token WordPiece vocabulary)
and reports the time of that call alone; runs are interleaved over --rounds rounds and the best is kept. Every run's
tokens.bin and offsets.bin are hashed: the features must be byte-identical across containers and worker counts.
"read MB/s" is the reading process alone (every text read, none tokenized): the ceiling on what any number of
workers can be fed. CPU s/MB is user + system time of the run's process and its workers during the call, per MiB.

    .venv/bin/python bench/tokenize_throughput.py                     # 48 MiB, 3 rounds; prints the table
    .venv/bin/python bench/tokenize_throughput.py --write-results     # ... and records it in bench/RESULTS.md
    .venv/bin/python bench/tokenize_throughput.py --rss-mb 1024 --only-rss --write-results   # the 1 GB Parquet
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import SAMPLE, write_marked_section  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "tokenize_throughput.json"
BEGIN, END = "<!-- tokenize_throughput: begin -->", "<!-- tokenize_throughput: end -->"
CONTAINERS = ("txt", "jsonl", "csv", "parquet", "arrow", "saved", "name")
BLOCK = 128


# ---- the corpus in every container ----------------------------------------------------------------------------

def rows_of(mb: float, seed: int = 0) -> list[str]:
    lines = [x for x in SAMPLE.read_text().splitlines() if x.strip()]
    rng, rows, size = random.Random(seed), [], 0
    while size < mb * 2**20:
        batch = rng.choices(lines, k=10000)
        rows.extend(batch)
        size += sum(len(x.encode()) + 1 for x in batch)
    return rows


def write_containers(rows: list[str], work: Path) -> dict[str, dict]:
    """{container: {"path": what to pass as the corpus, "cache": a datasets cache dir or None}}."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    work.mkdir(parents=True, exist_ok=True)
    (work / "c.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with open(work / "c.jsonl", "w", encoding="utf-8") as f:
        for i, x in enumerate(rows):
            f.write(json.dumps({"id": i, "text": x}, ensure_ascii=False) + "\n")
    with open(work / "c.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        w.writerows(enumerate(rows))
    table = pa.table({"id": pa.array(range(len(rows)), pa.int64()), "text": pa.array(rows, pa.string())})
    pq.write_table(table, work / "c.parquet", row_group_size=100_000)
    with pa.ipc.new_stream(str(work / "c.arrow"), table.schema) as w:
        for batch in table.to_batches(max_chunksize=1000):  # the stream layout datasets writes
            w.write_batch(batch)
    datasets.Dataset(table).save_to_disk(str(work / "saved"))
    named = work / "bench_corpus"
    named.mkdir(exist_ok=True)
    os.link(work / "c.parquet", named / "train.parquet")
    datasets.load_dataset(str(named), cache_dir=str(work / "hf-cache"))  # prepared once into the cache
    return {"txt": {"path": str(work / "c.txt")}, "jsonl": {"path": str(work / "c.jsonl")},
            "csv": {"path": str(work / "c.csv")}, "parquet": {"path": str(work / "c.parquet")},
            "arrow": {"path": str(work / "c.arrow")}, "saved": {"path": str(work / "saved")},
            "name": {"path": "bench_corpus", "cache": str(work / "hf-cache")}}


def write_tokenizer(work: Path) -> str:
    """The bench's BERT vocabulary: WordPiece, 8000 tokens, trained on the sample corpus."""
    import transformers as hf
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    lines = SAMPLE.read_text().splitlines()
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    hf.BertTokenizerFast(tokenizer_object=tok).save_pretrained(str(work / "tokenizer"))
    return str(work / "tokenizer")


# ---- one measured run (a fresh process) ------------------------------------------------------------------------

def worker(ns) -> None:
    import hashlib
    import resource

    sys.path.insert(0, str(ROOT))
    import transformers as hf

    from lmcore.data.corpus import CorpusReading, CorpusStats, resolve_files
    from lmcore.data.features import load_features

    import importlib

    for module in ("datasets", "pyarrow.parquet"):  # before the clock: a once-per-process cost, not throughput
        importlib.import_module(module)

    tokenizer = hf.AutoTokenizer.from_pretrained(ns.tokenizer)
    files = resolve_files(ns.source, dataset_cache_dir=ns.dataset_cache)
    out = {}
    before = os.times()
    start = time.perf_counter()
    if ns.read_only:
        stats = CorpusStats()
        out["characters"] = sum(map(len, CorpusReading(cache_dir=ns.dataset_cache).texts(files, stats)))
    else:
        features = load_features(files, tokenizer, "simple", BLOCK, ns.cache, reprocess=True,
                                 reading=CorpusReading(cache_dir=ns.dataset_cache), process_count=ns.workers)
    out["seconds"] = time.perf_counter() - start
    after = os.times()  # this process and its reaped tokenizing workers, around the measured call only
    out["cpu_s"] = sum(after[:4]) - sum(before[:4])
    out["cpu_main_s"] = sum(after[:2]) - sum(before[:2])
    out["rss_self_mb"] = peak_rss_mb()
    out["rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if not ns.read_only:  # after the clock and the memory figures: the check reads the files in pieces
        digest = hashlib.sha256()
        for name in ("tokens.bin", "offsets.bin"):
            with open(features.path / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        out["digest"], out["tokens"] = digest.hexdigest()[:16], features.num_tokens
    print("RESULT " + json.dumps(out), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not getrusage's ru_maxrss: Linux carries the parent's peak
    over a fork + exec into it, so a child of a large process would report the parent's figure."""
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024


def measure(source: dict, workers: int, tokenizer: str, cache: Path, read_only: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--source", source["path"], "--workers", str(workers),
           "--tokenizer", tokenizer, "--cache", str(cache)]
    cmd += ["--dataset-cache", source["cache"]] if source.get("cache") else []
    cmd += ["--read-only"] if read_only else []
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


# ---- the whole bench -------------------------------------------------------------------------------------------

def run(ns) -> dict:
    results = {"date": datetime.date.today().isoformat(), "machine": machine(), "command": command(ns)}
    with tempfile.TemporaryDirectory(prefix="lmcore-throughput-") as tmp:
        work = Path(tmp)
        tokenizer = write_tokenizer(work)
        if not ns.only_rss:
            results["throughput"] = throughput(ns, work, tokenizer)
        if ns.rss_mb:
            results["rss"] = large_parquet(ns.rss_mb, work, tokenizer)
    return results


def throughput(ns, work: Path, tokenizer: str) -> dict:
    rows = rows_of(ns.mb)
    text_mb = sum(len(x.encode()) + 1 for x in rows) / 2**20
    sources = write_containers(rows, work / "corpus")
    del rows
    containers = [c for c in CONTAINERS if c in ns.containers.split(",")]
    runs: dict[str, dict[str, list]] = {c: {} for c in containers}
    load = [os.getloadavg()[0]]
    session = datetime.datetime.now().isoformat(timespec="seconds")  # each run of the bench trains its vocabulary
    for r in range(ns.rounds):
        for workers in (1, 2):
            for c in containers:
                got = {**measure(sources[c], workers, tokenizer, work / f"cache-{c}-{workers}"), "session": session}
                runs[c].setdefault(str(workers), []).append(got)
                print(f"round {r + 1} {c:8s} workers={workers}: {text_mb / got['seconds']:.2f} MB/s "
                      f"({got['seconds']:.1f}s, cpu {got['cpu_s']:.1f}s, {got['digest']})", flush=True)
        for c in containers:
            got = measure(sources[c], 1, tokenizer, work / "cache-read", read_only=True)
            runs[c].setdefault("read", []).append(got)
        load.append(os.getloadavg()[0])
    sizes = {c: _size_mb(sources[c], work) for c in containers}
    return {"text_mb": text_mb, "runs": runs, "file_mb": sizes, "load_average": load}


def table(t: dict) -> list[dict]:
    """Per container: the best run of each kind (fastest wall time) and the figures derived from it."""
    text_mb, out = t["text_mb"], []
    for c in (c for c in CONTAINERS if c in t["runs"]):
        runs = t["runs"][c]
        best = {w: min(runs[w], key=lambda g: g["seconds"]) for w in ("1", "2")}
        out.append({"container": c, "file_mb": t["file_mb"][c], "rounds": len(runs["2"]),
                    "mb_s_1": text_mb / best["1"]["seconds"], "mb_s_2": text_mb / best["2"]["seconds"],
                    "speedup": best["1"]["seconds"] / best["2"]["seconds"],
                    "cpu_s_per_mb_1": best["1"]["cpu_s"] / text_mb, "cpu_s_per_mb_2": best["2"]["cpu_s"] / text_mb,
                    "main_cpu_s_per_mb_2": best["2"]["cpu_main_s"] / text_mb,
                    "read_mb_s": text_mb / min(g["seconds"] for g in runs["read"]),
                    "rss_mb_2": best["2"]["rss_self_mb"]})
    return out


def _size_mb(source: dict, work: Path) -> float:
    p = Path(source["path"]) if not source.get("cache") else work / "corpus" / "hf-cache"
    return (p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())) / 2**20


def large_parquet(mb: float, work: Path, tokenizer: str) -> dict:
    """Peak RSS of preparing a Parquet file of `mb` MiB of text (row groups of 100,000 rows), default workers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = work / "large.parquet"
    lines = [x for x in SAMPLE.read_text().splitlines() if x.strip()]
    rng, size = random.Random(1), 0
    schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as w:
        while size < mb * 2**20:
            docs = ["\n".join(rng.choices(lines, k=10)) for _ in range(100_000)]  # documents of ten lines
            size += sum(len(d.encode()) for d in docs)
            w.write_table(pa.table({"id": pa.array(range(len(docs)), pa.int64()), "text": docs}, schema=schema))
    got = measure({"path": str(path)}, 0, tokenizer, work / "cache-large")
    out = {"text_mb": size / 2**20, "file_mb": path.stat().st_size / 2**20, "seconds": got["seconds"],
           "mb_s": size / 2**20 / got["seconds"], "rss_self_mb": got["rss_self_mb"],
           "rss_children_mb": got["rss_children_mb"], "tokens": got["tokens"]}
    print(f"large Parquet: {out}", flush=True)
    return out


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    field = lambda name: next((x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith(name)), "?")
    import tokenizers
    import transformers

    return {"cpu": field("model name"), "flags": field("flags"), "cores": len(os.sched_getaffinity(0)),
            "python": sys.version.split()[0], "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__}


def command(ns) -> str:
    return "python bench/tokenize_throughput.py " + " ".join(ns.argv)


# ---- RESULTS.md ------------------------------------------------------------------------------------------------

def render(r: dict) -> str:
    m = r["machine"]
    out = [BEGIN, "## Corpus containers: tokenizing throughput (bench/tokenize_throughput.py)", ""]
    t = r.get("throughput")
    if t:
        rows = table(t)
        sessions: dict[str, set] = {}
        for runs in t["runs"].values():
            for g in runs["1"] + runs["2"]:
                sessions.setdefault(g.get("session", ""), set()).add(g["digest"])
        identical = all(len(d) == 1 for d in sessions.values())
        digests = sorted(d for group in sessions.values() for d in group)
        rounds = sorted({row["rounds"] for row in rows})
        out += [f"{t['text_mb']:.0f} MiB of text (lines of the sample corpus in a seeded random order), the same rows "
                "in every container; dataset_type simple, block 128, the bench's 8000-token WordPiece vocabulary; "
                f"best of {'-'.join(map(str, rounds))} interleaved rounds, each run a fresh process timed around "
                "`load_features`. MB/s is MiB of text per second. CPU s/MB: user + system seconds of the reading "
                "process and its tokenizing workers during the call, per MiB; the reading process's own share "
                "beside it. read MB/s: the reading process alone, every source checked and every text read, none "
                "tokenized: the most any number of workers can be fed.",
                "", "| container | file MiB | 1 worker MB/s | 2 workers MB/s | speed-up | CPU s/MB (1) | CPU s/MB (2) "
                "| of which reading process | read MB/s | peak RSS MB (2) |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            out.append(f"| {row['container']} | {row['file_mb']:.1f} | {row['mb_s_1']:.2f} | {row['mb_s_2']:.2f} | "
                       f"{row['speedup']:.2f}x | {row['cpu_s_per_mb_1']:.3f} | {row['cpu_s_per_mb_2']:.3f} | "
                       f"{row['main_cpu_s_per_mb_2']:.3f} | {row['read_mb_s']:.0f} | {row['rss_mb_2']:.0f} |")
        loads = ", ".join(f"{x:.1f}" for x in t["load_average"])
        out += ["", f"Features byte-identical across every container and worker count: "
                f"{'yes' if identical else 'NO'} (tokens.bin + offsets.bin SHA-256 prefix {', '.join(digests)}: one "
                f"per run of the bench, {len(sessions)} here, since each trains its own vocabulary). "
                f"1-minute load average of the machine around the rounds (other work shares its 2 cores): {loads}.",
                ""]
    if r.get("rss"):
        x = r["rss"]
        out += [f"Large Parquet: {x['text_mb']:,.0f} MiB of text ({x['file_mb']:,.0f} MiB on disk, row groups of "
                f"100,000 ten-line documents), default process_count: {x['seconds']:.0f} s ({x['mb_s']:.2f} MB/s), "
                f"peak RSS {x['rss_self_mb']:,.0f} MB (the reading process, torch and transformers imports "
                f"included), {x['rss_children_mb']:,.0f} MB the largest tokenizing worker.", ""]
    out += [f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, tokenizers {m['tokenizers']}, "
            f"transformers {m['transformers']}. Date: {r['date']}. Commands: "
            f"{', '.join(f'`{c}`' for c in r.get('commands') or [r['command']])}.", "",
            f"CPU flags: `{m['flags']}`", "", END]
    return "\n".join(out)


def write_results(r: dict) -> None:
    """Record in bench/tokenize_throughput.json and RESULTS.md. Runs of the same corpus size add to the recorded
    ones (the best of each kind is what counts, so more rounds only remove noise); --only-rss keeps the table."""
    old = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    merged = {**old, **r}
    before, new = old.get("throughput"), r.get("throughput")
    if new is None and before is not None:
        merged["throughput"] = before
    elif new and before and "runs" in before and abs(before["text_mb"] - new["text_mb"]) < 1e-6:
        for c, runs in before["runs"].items():
            for kind, got in runs.items():
                new["runs"].setdefault(c, {}).setdefault(kind, [])[:0] = got
        new["file_mb"] = {**before["file_mb"], **new["file_mb"]}
        new["load_average"] = before["load_average"] + new["load_average"]
    if "rss" not in r and "rss" in old:
        merged["rss"] = old["rss"]
    merged["commands"] = list(dict.fromkeys(old.get("commands", []) + [r["command"]])) if "command" in r else \
        old.get("commands", [])
    RESULTS_JSON.write_text(json.dumps(merged, indent=2) + "\n")
    print(f"wrote {write_marked_section(render(merged))} and {RESULTS_JSON}")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=48, help="MiB of text per container (default 48)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--containers", default=",".join(CONTAINERS))
    p.add_argument("--rss-mb", type=float, default=0, help="also measure a Parquet corpus of this many MiB")
    p.add_argument("--only-rss", action="store_true", help="skip the throughput table")
    p.add_argument("--write-results", action="store_true", help="record in bench/RESULTS.md")
    p.add_argument("--render", action="store_true", help="re-insert the recorded section into bench/RESULTS.md")
    for name in ("--source", "--tokenizer", "--cache", "--dataset-cache"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--read-only", action="store_true", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    ns.argv = argv
    return ns


def main(argv=None) -> int:
    ns = parse(sys.argv[1:] if argv is None else argv)
    if ns.worker:
        ns.workers = ns.workers or None
        worker(ns)
        return 0
    if ns.render:
        write_results({})
        return 0
    results = run(ns)
    print(render(results))
    if ns.write_results:
        write_results(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
