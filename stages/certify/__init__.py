"""The parity certificate: a proof that a trained net answers the parity of every bit sequence
of every length, or the reason it cannot be given.

- ``nets.py``: each family's step equations, written once against an abstract arithmetic
  (the only code the prover and the checker share), and the weight adapters;
- ``intervals.py``: the prover's interval arithmetic, rounded outward;
- ``search.py``: ``certify(family, weights)``, the prover;
- ``check.py``: ``check(certificate, family, weights)``, an independent re-verification with
  its own arithmetic, which the certify stages run on every certificate they write.

NumPy only: a certificate depends on the weights, not on torch or TensorFlow.
"""
