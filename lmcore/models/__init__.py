"""Model types and their settings: `args` (LanguageModelingArgs) with `compat` (Simple Transformers' names),
`classification_args`, `registry` (model type -> classes and tokenizer kind), `hub` (local-only loading), `families`
(build, load and save a single model or the ELECTRA pair). These import only `lmcore.base`, except `families`, which
assembles a family from the parts below it: `lmcore.data.tokenizer`, `lmcore.objectives` and
`lmcore.training.checkpoint`. Never the front doors.
"""
