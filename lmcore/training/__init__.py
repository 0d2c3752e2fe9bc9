"""The loop and what it needs: `train` (fit and train_step), `evaluate`, `checkpoint`, `dist` (the process group),
`precision` and `hardware` (dtype, autocast, attention), `optim`, `progress`, `tracking`, `console`. May import
`lmcore.base`, `lmcore.data` (features, batches), `lmcore.models` (args) and `lmcore.objectives`; never the front
doors.
"""
