"""The C line scanner (keepa_ops/logs/_linescan.c) and run splitter (keepa_ops/diagnosis/_runs.c);
everything else is in pyproject.toml.

optional=True: without a working C compiler the install still succeeds, and
keepa_ops.logs.scanner and keepa_ops.diagnosis.runs fall back to their numpy and pure-Python
forms (same answers, slower; tests/test_linescan.py::test_the_native_scanner_is_built then fails
to say so).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("keepa_ops.logs._linescan", ["keepa_ops/logs/_linescan.c"], extra_compile_args=["-O2"],
                             optional=True),
                   Extension("keepa_ops.diagnosis._runs", ["keepa_ops/diagnosis/_runs.c"], extra_compile_args=["-O2"],
                             optional=True)])
