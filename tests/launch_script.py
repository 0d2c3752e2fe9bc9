"""Launched by `python -m torch.distributed.launch` the way Simple Transformers' distributed example is: the script
reads the launcher's --local_rank argument and copies it into its args dict; the engine does the rest."""

import argparse
import json
import os
import sys

from lmcore import LanguageModelingModel
from lmcore.training import dist

parser = argparse.ArgumentParser()
parser.add_argument("--local_rank", "--local-rank", type=int, default=-1)
parser.add_argument("spec")
cli = parser.parse_args()
spec = json.loads(open(cli.spec).read())
train_args = dict(spec["args"])
train_args["local_rank"] = cli.local_rank

model = LanguageModelingModel("gpt2", None, args=train_args, train_files=spec["train_files"])
model.train_model(spec["train_files"], eval_file=spec["eval_files"])
result = model.eval_model(spec["eval_files"])
with open(os.path.join(spec["report_dir"], f"rank{dist.rank()}.json"), "w") as f:
    json.dump({"local_rank": cli.local_rank, "rank": dist.rank(), "world": dist.world(), "result": result,
               "steps": model.training_details["global_step"]}, f)
sys.exit(0)
