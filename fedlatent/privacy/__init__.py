"""Privacy: accounting (``accounting``, Opacus), each client's ``ledger``, DP-SGD (``dp_sgd``),
the latent release (``mechanisms``), a client's DP round and release (``client``) and the
noise-aware server learners (``learners``).

No Flower and no run config here: privacy settings come as keyword-only arguments
(``fedlatent.plan`` derives them from a ``RunConfig``), so every ε can be audited in one place.
"""
