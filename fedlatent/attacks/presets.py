"""The attack families and their effort presets: one registry, importable without torch-heavy modules.

``PRESETS[preset][family]`` are the settings ``fedlatent attack --preset`` passes to each
family; ``FAMILIES`` and ``PRESET_NAMES`` are the CLI's choices. ``run.ATTACKS`` maps each
family to its runner (a test checks both name the same families).
"""

from typing import Any

# Attack effort: "full" is the default; "quick" is for smoke tests only. Gradient inversion scores
# max_uploads reconstructions (one per upload) after choosing its variant on select_uploads others:
# 24 give a 95% interval of about +-0.03 SSIM on the headline (per-reconstruction sd ~0.066
# measured on the claims setting), and span all 10 clients of it for the stranger test.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "latent-inversion": {"epochs": 100, "shadow_epochs": 50},
        "gradient-inversion": {"max_uploads": 48, "select_uploads": 8, "num_inputs": 1, "steps": 300, "local_steps": 5},
        "membership": {"candidates": 2000, "num_shadows": 4},
        "model-inversion": {"steps": 300, "inverse_epochs": 100},
    },
    # ~5x less training of the inverse/shadow networks than "full": for 2-core machines.
    "standard": {
        "latent-inversion": {"epochs": 20, "shadow_epochs": 10, "noise_draws": 2},
        "gradient-inversion": {
            "max_uploads": 24,
            "select_uploads": 4,
            "num_inputs": 1,
            "steps": 300,
            "inverse_epochs": 20,
            "local_steps": 5,
        },
        "membership": {"candidates": 2000, "num_shadows": 4},
        "model-inversion": {"steps": 300, "inverse_epochs": 20, "shadow_epochs": 10},
    },
    "quick": {
        "latent-inversion": {"epochs": 15, "shadow_epochs": 5, "noise_draws": 1, "max_records": 2000},
        "gradient-inversion": {
            "max_uploads": 1,
            "select_uploads": 1,
            "num_inputs": 1,
            "steps": 40,
            "inverse_epochs": 10,
            "local_steps": 3,
        },
        "membership": {"candidates": 200, "num_shadows": 2, "epochs": 3},
        "model-inversion": {"steps": 40, "inverse_epochs": 10},
    },
}

FAMILIES: tuple[str, ...] = tuple(PRESETS["full"])
PRESET_NAMES: tuple[str, ...] = tuple(PRESETS)
