"""Commands that are not stages: ``dag`` (writes dvc.yaml), ``repro`` (runs it), ``check``
(the regression gate), ``predict`` and ``rerun``. A change here reruns no stage.
"""
