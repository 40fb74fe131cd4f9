"""Data: loading the data sets (``loading``) and who holds which record (``partition``).

No Flower, no training: pure functions of files, labels and seeds.
"""
