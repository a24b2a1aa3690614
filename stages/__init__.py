"""paritylab's pipeline stages and command line (``python -m stages --help``).

Importing this package is cheap: torch and TensorFlow are imported only by the
commands that use them.
"""
