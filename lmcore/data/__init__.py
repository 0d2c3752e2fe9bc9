"""The data layer, one way down: `textfiles` decodes text files into lines, `containers` turns files and folders
into rows, `corpus` resolves, checks, hashes and
yields texts, `features` turns texts into memory-mapped token blocks and `batches` draws batches from them;
`prepare` writes clean splits, `tokenizer` trains and loads tokenizers, `labelled` reads labelled text,
`sample_corpus` makes the demo corpus. May import `lmcore.base` and, for settings and model types, `lmcore.models`
(args, classification_args, registry, hub); never `lmcore.objectives`, `lmcore.training` or the front doors.
"""
