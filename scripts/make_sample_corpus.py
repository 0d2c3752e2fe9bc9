"""Build the bundled sample corpus (lmcore/sample_data/) from the Python standard library's docstrings.

Real English prose that is always available offline. Run once by a maintainer; the output is committed so every
machine trains on the very same bytes.
"""

import importlib
import inspect
import pkgutil
import random
import re
import sys
from pathlib import Path

SKIP = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "antigravity", "this", "__")


def docstrings():
    for info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if info.name.startswith(SKIP) or info.name not in sys.stdlib_module_names:
            continue
        try:
            mod = importlib.import_module(info.name)
        except Exception:
            continue
        yield inspect.getdoc(mod)
        for _, obj in sorted(vars(mod).items()):
            if getattr(obj, "__module__", None) == mod.__name__:
                yield inspect.getdoc(obj)
                if inspect.isclass(obj):
                    for _, m in sorted(vars(obj).items()):
                        if callable(m):
                            yield inspect.getdoc(m)


def paragraphs():
    seen = set()
    for doc in docstrings():
        for para in re.split(r"\n\s*\n", doc or ""):
            text = " ".join(para.split())
            letters = sum(c.isalpha() or c == " " for c in text)
            if len(text) >= 60 and letters / len(text) > 0.9 and ">>>" not in text and text not in seen:
                seen.add(text)
                yield text


def main():
    out = Path(__file__).resolve().parent.parent / "lmcore" / "sample_data"
    out.mkdir(exist_ok=True)
    paras = list(paragraphs())
    random.Random(0).shuffle(paras)
    n_eval = max(50, len(paras) // 20)
    (out / "eval.txt").write_text("\n".join(paras[:n_eval]) + "\n")
    (out / "train.txt").write_text("\n".join(paras[n_eval:]) + "\n")
    print(f"{len(paras)} paragraphs; train {len(paras) - n_eval}, eval {n_eval}")


if __name__ == "__main__":
    main()
