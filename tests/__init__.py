"""The test suite, in folders that mirror the code: engine/ (lmcore), pipeline/ (tasks, flows), bench/, repo/.

Every folder is a package, so pytest puts the repository root on sys.path and each test module has a name of its
own (tests.engine.data.test_corpora); shared helpers are imported the same way (tests.conftest,
tests.pipeline_support), and the scripts launched by path (ddp_script.py, grad_script.py, launch_script.py) and the
on_evaluation hook (tests.evaluation_hooks) stay here beside conftest.py.
"""
