"""Run by the gradient-equivalence tests (alone or under torchrun): one optimizer step, then write the gradients
it applied (captured where they are clipped, after every micro-batch and the all-reduce) and its logged loss.
A spec with "classifier" fine-tunes a ClassificationModel from that folder (class weights 1 and 3) instead."""

import json
import sys

import torch

from lmcore import ClassificationModel, LanguageModelingModel
from lmcore.training import dist

spec = json.loads(open(sys.argv[1]).read())
captured = {}
clip = torch.nn.utils.clip_grad_norm_


def capture(params, *a, **kw):
    captured["grads"] = [p.grad.detach().clone() for p in params]
    return clip(params, *a, **kw)


torch.nn.utils.clip_grad_norm_ = capture
if "classifier" in spec:
    model = ClassificationModel("bert", spec["classifier"], weight=[1.0, 3.0], args=spec["args"], use_cuda=False)
else:
    model = LanguageModelingModel(spec["model_type"], None, args=spec["args"], train_files=spec["train_files"])
names = [n for n, p in model.model.named_parameters() if p.requires_grad]
model.train_model(spec["train_files"])
if dist.is_main():
    torch.save({"grads": dict(zip(names, captured["grads"])), "loss": model.training_details["train_loss"][0]},
               spec["out"])
