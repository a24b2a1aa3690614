"""The DVC stages, one thin module per stage and engine (dvc.yaml's commands run them):
generate, train_torch / train_keras / train_search, evaluate_torch / evaluate_keras (with the
shared evaluate.py), seeds, xor and report. A change here reruns that stage.
"""
