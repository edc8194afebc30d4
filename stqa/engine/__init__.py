"""Training (detectron2's ``engine/``): the options (:mod:`.config`), the named stages of a run
(:mod:`.stages`) and the loop that strings them together, the ``stqa train`` command (:mod:`.trainer`).

Evaluation (:mod:`stqa.evaluation`) and the process-group helpers (:mod:`stqa.utils.comm`) never import
this package; it imports them.
"""
