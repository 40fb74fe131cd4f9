"""The run-directory contract of ARCHITECTURE.md, written out once for the tests.

Kept apart from the code on purpose: a field the code stops writing must fail a test.
"""

RESULT_FIELDS = frozenset(
    {
        "mode",
        "encoder",
        "dataset",
        "num_clients",
        "rounds",
        "partition",
        "accuracy",
        "epsilon",
        "epsilon_per_client",
        "delta",
        "end_to_end_dp",
        "bytes_uploaded",
        "bytes_downloaded",
        "wall_seconds",
        "history",
        "seed",
        "fedlatent_version",
        "rejected_replies",
    }
)
