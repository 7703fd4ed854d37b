"""The C line scanner (keepa_ops/_linescan.c); everything else is in pyproject.toml."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("keepa_ops._linescan", ["keepa_ops/_linescan.c"], extra_compile_args=["-O2"])])
