"""Names of the attack families (importable without torch-heavy attack modules)."""

FAMILIES = ("latent-inversion", "gradient-inversion", "membership", "model-inversion")
