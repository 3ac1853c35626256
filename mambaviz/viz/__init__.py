"""Figures and HTML for a trace: the draft tree, the output text and the run's metrics.

Every builder is a pure function of a Trace or StepRecord, so a replayed trace draws exactly what
the live run drew. Token text reaches HTML and Plotly only through `mambaviz.viz.tokens`, which
escapes it.
"""
