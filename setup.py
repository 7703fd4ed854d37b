"""The C line scanner (keepa_ops/logs/_linescan.c); everything else is in pyproject.toml.

optional=True: without a working C compiler the install still succeeds, and
keepa_ops.logs.scanner falls back to its pure-Python reference (same answers, slower;
tests/test_linescan.py::test_the_native_scanner_is_built then fails to say so).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("keepa_ops.logs._linescan", ["keepa_ops/logs/_linescan.c"], extra_compile_args=["-O2"],
                             optional=True)])
