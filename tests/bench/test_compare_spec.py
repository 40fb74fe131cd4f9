"""compare's built-in sweep: the default answers the question on Fashion-MNIST; options win over the profile."""

from __future__ import annotations

import math

import pytest

from fedlatent.bench.compare_spec import FULL, compare_spec, profile, what_was_cut
from fedlatent.bench.sweep import points
from fedlatent.cli import build_parser
from fedlatent.config import ConfigError


def test_the_default_is_each_mode_and_its_encoders_on_fashion_mnist_with_one_percent_public() -> None:
    spec = compare_spec({})
    pts = points(spec)
    fed = [p.overrides for p in pts if not p.is_public_only]
    assert len(pts) == 7 and len(fed) == 6  # 3 settings x 2 budgets, one bar
    assert {o["dataset"] for o in fed} == {"fashion-mnist"} and {o["public-fraction"] for o in fed} == {0.01}
    assert sorted((o["mode"], o.get("encoder", "-")) for o in fed if math.isinf(o["epsilon"])) == [
        ("latent-fedavg", "scatternet"),
        ("latent-share", "public"),
        ("raw", "-"),
    ]
    assert {o["epsilon"] for o in fed} == {math.inf, 3.0}
    assert all(o.get("latent-classifier") == "linear" for o in fed if o.get("encoder") == "scatternet")
    assert all("latent-classifier" not in o for o in fed if o.get("encoder") != "scatternet")
    assert all(o.get("ae-labels") == 1.0 for o in fed if o.get("encoder") == "public")  # the claims' autoencoder
    dp = [o for o in fed if o["epsilon"] == 3.0]
    assert all((o["batch-size"], o["lr"]) == (256, 0.01) for o in dp)  # few DP steps: the DP recipe
    assert all("batch-size" not in o and "lr" not in o for o in fed if o not in dp)
    assert len({p.public_only for p in pts}) == 1  # one bar for every point: the strongest public-only classifiers
    assert spec.attacks == "quick" and "gradient-inversion" in spec.families
    every = compare_spec({}, encoders=["public", "scatternet"])
    assert len([p for p in points(every) if not p.is_public_only]) == 10  # asked for: latent-share x scatternet too


def test_options_win_over_the_profile_and_digits_keeps_its_own() -> None:
    spec = compare_spec({"rounds": 7, "latent-classifier": "mlp"}, modes=["latent-share"], encoders=["scatternet"])
    fed = [p.overrides for p in points(spec) if not p.is_public_only]
    assert {(o["rounds"], o["latent-classifier"], o["mode"]) for o in fed} == {(7, "mlp", "latent-share")}
    digits = compare_spec({"dataset": "digits"}, epsilon=math.inf, attacks="none")
    assert "public-fraction" not in digits.base and digits.attacks == ""
    assert {p.overrides.get("epsilon", math.inf) for p in points(digits)} == {math.inf}
    assert profile("mnist") == profile("fashion-mnist")


def test_the_output_says_what_was_cut_from_the_full_setting() -> None:
    line = what_was_cut(compare_spec({}).base)
    assert "rounds 3 (full: 10)" in line and "local-epochs 1 (full: 5)" in line
    assert what_was_cut(dict(FULL)) == ""
    assert "Cut from the full setting" in compare_spec({}).description and "lr 0.01" in compare_spec({}).description


def test_a_bad_value_fails_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="public-fraction"):
        points(compare_spec({"public-fraction": 1.5}))


def test_compare_options_name_encoders_and_show_the_profile_defaults() -> None:
    args = build_parser().parse_args(["compare", "--encoders", "scatternet", "--dataset", "digits"])
    assert args.encoders == ["scatternet"] and args.dataset == "digits" and args.rounds is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--encoder", "public"])  # one encoder per run: use --encoders
