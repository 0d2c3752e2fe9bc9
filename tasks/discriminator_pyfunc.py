"""The ELECTRA discriminator as an MLflow pyfunc model (logged "from code": MLflow copies this file into the model).

Input: a list of texts, a pandas DataFrame with a "text" column, or one string. Output: one row per text with
the tokens and, for each, the probability that the discriminator thinks it was replaced.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


class ReplacedTokenDetector(PythonModel):
    def load_context(self, context):
        import transformers as hf

        folder = context.artifacts["discriminator"]
        self.tokenizer = hf.AutoTokenizer.from_pretrained(folder)
        self.model = hf.ElectraForPreTraining.from_pretrained(folder).eval()

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import torch

        texts = _texts(model_input)
        rows = []
        for text in texts:
            enc = self.tokenizer(text, return_tensors="pt", truncation=True)
            with torch.no_grad():
                logits = self.model(**enc).logits[0]
            rows.append({"text": text,
                         "tokens": self.tokenizer.convert_ids_to_tokens(enc["input_ids"][0].tolist()),
                         "replaced_probability": torch.sigmoid(logits).tolist()})
        return pd.DataFrame(rows)


def _texts(model_input) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns"):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column]]
    return [str(t) for t in model_input]


mlflow.models.set_model(ReplacedTokenDetector())
