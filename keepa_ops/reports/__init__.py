"""Reports: the plotly figures and the notebook pipeline that runs 01 -> 04.

Owns figure builders and ``run_pipeline`` (papermill, HTML reports, ``index.json``). It
may import every layer below; nothing in keepa-ops imports it except ``cli``.
"""
