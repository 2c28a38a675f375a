"""The parts of ``bench/proof.py``: the misbehaving backend, the load, the reconciliation."""
