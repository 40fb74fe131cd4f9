"""Benchmarks: the performance benchmark (``perf``, ``fedlatent bench``) with its centralized
references (``central``) and report (``report``); research sweeps join them as they come.
"""
