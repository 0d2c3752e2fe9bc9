"""DDP through torchrun on CPU (gloo): one rank writes, every rank reports the same perplexity, resume holds,
and two torchrun agents on this machine rendezvous as two nodes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmcore import LanguageModelingModel
from tests.conftest import ROOT, sample_lines, tiny_args

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "tests" / "ddp_script.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_spec(tmp_path: Path, name: str, args: dict, model_name=None) -> Path:
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    if not train.exists():
        train.write_text("\n".join(sample_lines("train.txt", 400)) + "\n")
        test.write_text("\n".join(sample_lines("eval.txt", 50)) + "\n")
    report = tmp_path / f"report-{name}"
    report.mkdir()
    spec = {"model_type": "bert", "model_name": model_name, "args": args, "train_files": [str(train)],
            "eval_files": [str(test)], "report_dir": str(report)}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def torchrun(*extra: str, spec: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", *extra, str(SCRIPT), str(spec)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=spec.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def reports(spec: Path) -> list[dict]:
    folder = Path(json.loads(spec.read_text())["report_dir"])
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def test_two_processes_train_one_writes_all_agree(tmp_path):
    args = tiny_args("bert", tmp_path, max_steps=10, save_steps=5, logging_steps=5)
    spec = write_spec(tmp_path, "ddp", args)
    proc = torchrun("--standalone", "--nproc_per_node=2", spec=spec)
    r0, r1 = reports(spec)
    assert (r0["world"], r1["world"]) == (2, 2) and r0["threads"] >= 1
    assert r0["result"] == r1["result"]  # sharded evaluation, reduced over ranks
    assert r0["step"] == r1["step"] == 10
    # Each step consumed a batch on both ranks: twice the tokens of one process.
    assert r0["tokens_seen"] > 10 * 16 * 40
    log = proc.stdout + proc.stderr
    assert log.count("step 10/10") == 1 and log.count("Saved the trained model") == 1
    out = Path(args["output_dir"])
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == ["checkpoint-10",
                                                                                         "checkpoint-5"]
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".tmp*"))

    # The saved model, evaluated by one process, has the perplexity the two ranks reported.
    single = LanguageModelingModel("bert", str(out), args=tiny_args("bert", tmp_path / "single"))
    assert single.eval_model(str(tmp_path / "test.txt"))["perplexity"] == pytest.approx(
        r0["result"]["perplexity"], rel=1e-5)


def test_two_process_resume_matches_straight_run(tmp_path):
    args = tiny_args("bert", tmp_path / "a", max_steps=8, save_steps=4)
    straight = write_spec(tmp_path, "straight", args)
    torchrun("--standalone", "--nproc_per_node=2", spec=straight)
    ckpt = Path(args["output_dir"]) / "checkpoint-4"
    resumed = write_spec(tmp_path, "resumed", tiny_args("bert", tmp_path / "b", max_steps=8, save_steps=4),
                         model_name=str(ckpt))
    torchrun("--standalone", "--nproc_per_node=2", spec=resumed)
    a = load_file(Path(args["output_dir"]) / "model.safetensors")
    b = load_file(tmp_path / "b" / "out-bert" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert reports(resumed)[0]["train_loss"][4:] == pytest.approx(reports(straight)[0]["train_loss"][4:], rel=1e-5)


def test_two_nodes_rendezvous_on_localhost(tmp_path):
    """Two torchrun agents, one process each, meeting through the c10d rendezvous as --nnodes=2 would across
    machines; they must train exactly like one agent with two processes."""
    args = tiny_args("bert", tmp_path / "nodes", max_steps=6, save_steps=-1)
    spec = write_spec(tmp_path, "nodes", args)
    port = free_port()
    common = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
              "--rdzv-id=lmcore-test", "--max-restarts=0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *common, str(SCRIPT), str(spec)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=tmp_path) for _ in range(2)]
    outs = [a.communicate(timeout=300)[0] for a in agents]
    assert all(a.returncode == 0 for a in agents), "\n".join(o[-2000:] for o in outs)
    r = reports(spec)
    assert [x["world"] for x in r] == [2, 2] and r[0]["result"] == r[1]["result"]

    # Same cache: the same trained tokenizer (the tokenizers library breaks frequency ties in hash order, so two
    # trainings on one corpus can differ in a few rare tokens).
    one_agent = write_spec(tmp_path, "one-agent", tiny_args("bert", tmp_path / "agent", max_steps=6, save_steps=-1,
                                                            cache_dir=args["cache_dir"]))
    torchrun("--standalone", "--nproc_per_node=2", spec=one_agent)
    # Same data on the same ranks: equal losses up to float summation order (each "node" here believes it has
    # the machine's cores to itself, so its ranks run more threads than the single agent's).
    one = reports(one_agent)[0]
    assert one["train_loss"] == pytest.approx(r[0]["train_loss"], rel=1e-4)


def test_torch_distributed_launch_with_local_rank_copied_into_the_args(tmp_path):
    """The launcher Simple Transformers' documentation shows, on a script that passes --local_rank on in its
    args dict: both ranks train one model together and report the same perplexity."""
    args = tiny_args("gpt2", tmp_path, max_steps=6, logging_steps=3, evaluate_during_training=True,
                     evaluate_during_training_steps=3, save_eval_checkpoints=False)
    spec = write_spec(tmp_path, "launch", args)
    cmd = [sys.executable, "-m", "torch.distributed.launch", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(ROOT / "tests" / "launch_script.py"), str(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = reports(spec)
    assert (r0["local_rank"], r1["local_rank"]) == (0, 1) and r0["world"] == r1["world"] == 2
    assert r0["steps"] == r1["steps"] == 6 and r0["result"] == r1["result"]
    assert (Path(args["output_dir"]) / "model.safetensors").exists()
