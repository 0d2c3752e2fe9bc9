"""Run by the classification gradient-equivalence test (alone or under torchrun): one optimizer step of a
ClassificationModel, then write the gradients it applied (captured where they are clipped, after every
micro-batch and the all-reduce) and its logged loss."""

import json
import sys

import torch

from lmcore import ClassificationModel, dist

spec = json.loads(open(sys.argv[1]).read())
captured = {}
clip = torch.nn.utils.clip_grad_norm_


def capture(params, *a, **kw):
    captured["grads"] = [p.grad.detach().clone() for p in params]
    return clip(params, *a, **kw)


torch.nn.utils.clip_grad_norm_ = capture
model = ClassificationModel("bert", spec["model"], weight=[1.0, 3.0], args=spec["args"], use_cuda=False)
model.train_model(spec["data"])
if dist.is_main():
    torch.save({"grads": captured["grads"], "loss": model.training_details["train_loss"][0]}, spec["out"])
