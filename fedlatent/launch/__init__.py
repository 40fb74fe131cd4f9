"""Launch: Flower processes on this machine — a private SuperLink for simulations
(``superlink``), a local multi-process deployment (``deployment``) and the process plumbing
both share (``processes``). Nothing here trains or imports training code.
"""
