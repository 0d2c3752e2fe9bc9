"""Launched by torchrun in the distributed tests: train and evaluate, then write what this rank saw."""

import json
import logging
import os
import sys

import torch

from lmcore import LanguageModelingModel
from lmcore.training import dist

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
spec = json.loads(open(sys.argv[1]).read())
model = LanguageModelingModel(spec["model_type"], spec.get("model_name"), args=spec["args"],
                              train_files=spec.get("train_files"))
step, _ = model.train_model(spec["train_files"])
details = model.training_details
result = model.eval_model(spec["eval_files"])
record = {"rank": dist.rank(), "world": dist.world(), "step": step, "result": result,
          "threads": torch.get_num_threads(), "train_loss": details["train_loss"],
          "tokens_seen": details["tokens_seen"]}
with open(os.path.join(spec["report_dir"], f"rank{dist.rank()}.json"), "w") as f:
    json.dump(record, f)
