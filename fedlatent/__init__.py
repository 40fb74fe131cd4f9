"""fedlatent: federated learning on autoencoder latents, with measured privacy.

Clients encode their images with an autoencoder's encoder and either federate a latent
classifier (``latent-fedavg``) or share privatized latents (``latent-share``); a raw-image
federation (``raw``) is the baseline. See README.md and ARCHITECTURE.md.
"""

__version__ = "0.1.0"
