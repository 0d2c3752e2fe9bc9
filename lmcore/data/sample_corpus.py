"""The sample corpus: English prose made on this machine from the docstrings of the local Python's standard library.

Nothing of it is in the repository or the package. The first use writes it into a cache folder (`folder()`):
train.txt, eval.txt (a held-out 5%, at least 50 paragraphs), NOTICE (where the text comes from, under which
licence, which Python made it) and LICENSE-Python.txt when that Python ships its licence file. Another Python
version gives other text; one machine always gets the same bytes.

A corpus parameter names it with a reserved value (`SAMPLE`, "sample"; "sample[eval]" for the held-out part),
resolved in `lmcore.data.corpus.resolve_files` through `resolve()`. Only that exact string is reserved: "./sample" or
any other spelling of a path is the user's own corpus, and a bare "sample" beside an existing ./sample is refused as
ambiguous, so a user's files are never swapped for the sample.

    python -m lmcore.data.sample_corpus            # builds it if needed and prints the folder

The text is written by this file run as a script in a separate, isolated interpreter (`python -I`): importing
every standard-library module has side effects a training process should not inherit, and the isolation keeps
the current directory and user site-packages out of what is imported. This module imports only the standard
library, so it runs as a script without lmcore.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLE = "sample"
"""The reserved corpus value naming the sample's train part."""
PARTS = {SAMPLE: "train.txt", f"{SAMPLE}[train]": "train.txt", f"{SAMPLE}[eval]": "eval.txt"}
NAME = "sample-data"
"""The corpus's name (its folder's, and in registered model names: sample-data-bert)."""
FOLDER_ENV = "LMCORE_SAMPLE_DIR"


class SampleCorpusError(RuntimeError):
    pass


def folder() -> Path:
    """Where the sample lives: $LMCORE_SAMPLE_DIR, else <$XDG_CACHE_HOME or ~/.cache>/lmcore/sample-data."""
    if os.environ.get(FOLDER_ENV):
        return Path(os.environ[FOLDER_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "lmcore" / NAME


def is_sample(value) -> bool:
    return isinstance(value, str) and value in PARTS


def ensure(where: Path | None = None) -> Path:
    """The sample's folder, written first if it is not complete (another process writing it at the same time
    is fine: each writes a folder of its own and the first to rename it into place wins)."""
    target = Path(where) if where else folder()
    if (target / "NOTICE").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    scratch.chmod(0o755)  # mkdtemp's folder is private; the text is for everyone who trains here
    try:
        done = subprocess.run([sys.executable, "-I", str(Path(__file__).resolve()), "--write", str(scratch)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not (scratch / "NOTICE").exists():
            raise SampleCorpusError(f"could not write the sample corpus into {target}:\n{done.stderr[-2000:]}")
        if target.exists() and not (target / "NOTICE").exists():
            shutil.rmtree(target)  # left incomplete by hand: the rename below needs the name free
        try:
            os.rename(scratch, target)
        except OSError:
            if not (target / "NOTICE").exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def resolve(value: str) -> Path:
    """The file a reserved corpus value stands for ("sample" -> train.txt, "sample[eval]" -> eval.txt), built on
    first use. Refused when a file or folder of that very name exists here: which one was meant is not known."""
    if Path(value).exists():
        raise SampleCorpusError(f"corpus {value!r} names the generated sample corpus, and ./{value} exists too: "
                                f"pass ./{value} (or its full path) for your own")
    return ensure() / PARTS[value]


# ---- writing the text (runs as a script in a separate interpreter) -------------------------------------------

_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "antigravity", "this", "__")
EVAL_SHARE, EVAL_MIN = 20, 50
"""eval.txt holds 1 / EVAL_SHARE of the paragraphs, at least EVAL_MIN."""


def _docstrings():
    import importlib
    import inspect
    import pkgutil

    for info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if info.name.startswith(_SKIP) or info.name not in sys.stdlib_module_names:
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # a module this platform cannot import (no tkinter, no curses): its text is not needed
            continue
        yield inspect.getdoc(module)
        for _, obj in sorted(vars(module).items()):
            if getattr(obj, "__module__", None) == module.__name__:
                yield inspect.getdoc(obj)
                if inspect.isclass(obj):
                    for _, member in sorted(vars(obj).items()):
                        if callable(member):
                            yield inspect.getdoc(member)


def _paragraphs():
    """Paragraphs of prose: one line each, at least 60 characters, mostly letters and spaces, no doctest, no
    repeats."""
    import re

    seen = set()
    for doc in _docstrings():
        for block in re.split(r"\n\s*\n", doc or ""):
            text = " ".join(block.split())
            letters = sum(c.isalpha() or c == " " for c in text)
            if len(text) >= 60 and letters / len(text) > 0.9 and ">>>" not in text and text not in seen:
                seen.add(text)
                yield text


def _write(out: Path) -> None:
    import hashlib
    import platform
    import random
    import sysconfig

    paragraphs = list(_paragraphs())
    random.Random(0).shuffle(paragraphs)
    n_eval = max(EVAL_MIN, len(paragraphs) // EVAL_SHARE)
    parts = {"eval.txt": paragraphs[:n_eval], "train.txt": paragraphs[n_eval:]}
    for name, lines in parts.items():
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    licence = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if licence.is_file():
        shutil.copyfile(licence, out / "LICENSE-Python.txt")
    files = "\n".join(f"  {name}: {len(lines)} paragraphs, sha256 "
                      f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}" for name, lines in parts.items())
    python = f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})"
    (out / "NOTICE").write_text(
        f"Sample corpus for lmcore, written on this machine by lmcore/data/sample_corpus.py; not part of lmcore's\n"
        f"repository or package.\n\n"
        f"What it is: paragraphs of the docstrings of the standard library of {python},\n"
        f"one paragraph per line, shuffled (seed 0), {n_eval} of them held out in eval.txt.\n{files}\n\n"
        f"Whose it is: the docstrings are part of Python, distributed under the PSF License Agreement\n"
        f"(https://docs.python.org/3/license.html"
        f"{'; the full text is in LICENSE-Python.txt beside this file' if licence.is_file() else ''}).\n"
        f"Python's copyright notice, kept as that licence asks:\n\n{sys.copyright}\n", encoding="utf-8")


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--write":  # the isolated writer ensure() starts
        _write(Path(argv[1]))
    elif argv:
        sys.exit("usage: python -m lmcore.data.sample_corpus   (builds the sample corpus if needed and prints its "
                 f"folder; ${FOLDER_ENV} chooses another)")
    else:
        print(ensure())


if __name__ == "__main__":
    main(sys.argv[1:])
