"""Federation: the Flower apps and what they share.

``payloads`` (the wire contract), ``client_app`` and ``server_app`` (thin adapters; nothing
imports them), ``phases`` (the server's phases over one ``RunContext``), ``strategy`` (FedAvg
that checks, records and counts; client-level DP), ``server_view`` and ``report`` (the run
directory).
"""
