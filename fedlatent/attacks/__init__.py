"""Attacks on what the server saw (ARCHITECTURE.md, "Threat model of the attacks").

One module per family; each attack takes an ``AttackerView`` (``view.py``) as its only
source of data, and is scored separately against ``Truth`` by ``run.py``.
"""
