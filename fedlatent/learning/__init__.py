"""Learning: the nn.Modules (``models``), pure train/evaluate functions (``training``),
the seeding of every random step (``seeding``) and the trained-module cache (``cache``).

No Flower and no privacy here: the apps and the privacy layer call these functions.
"""
