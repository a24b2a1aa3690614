"""The core: what decides results and is shared by every stage. Params and their schema,
artifact paths, the dataset format, file writing, seeding, device choice, statistics.

Imports no torch, TensorFlow or MLflow at import time. A change here reruns the stages
that import the changed module (dvc.yaml lists them).
"""
