"""Sweeps on Ray Tune (``python -m stages sweep``): the sweep file's schema, the trial plan,
one trial, the Ray runner and the results table. Not part of the DVC pipeline.
"""
