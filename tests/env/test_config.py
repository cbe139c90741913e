from __future__ import annotations

import json

import pytest

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.env.config import Budget, EnvConfig, format_amount, parse_budget


@pytest.mark.parametrize(
    ("metric", "text", "value", "relative"),
    [
        ("flops", "0.2", 0.2, True),
        ("flops", "20%", 0.2, True),
        ("flops", "1", 1.0, True),
        ("flops", "1.5M", 1.5e6, False),
        ("flops", "2g", 2e9, False),
        ("params", "150K", 150000.0, False),
        ("params", "200K", 2e5, False),
        ("size", "300KB", 3e5, False),
        ("size", "1MiB", 1024.0**2, False),
        ("size", "512B", 512.0, False),
        ("latency", "4ms", 0.004, False),
        ("latency", "250us", 0.00025, False),
        ("latency", "0.5", 0.5, True),
        ("flops", 0.3, 0.3, True),
        ("params", 0.05, 0.05, True),
    ],
)
def test_parse_budget(metric: str, text: str | float, value: float, relative: bool) -> None:
    budget = parse_budget(metric, text)
    assert budget.metric == metric
    assert budget.value == pytest.approx(value)
    assert budget.relative is relative


@pytest.mark.parametrize(
    ("metric", "text", "fragment"),
    [
        ("flops", "abc", "cannot read"),
        ("flops", "3ms", "unknown unit"),
        ("latency", "4", "did you mean 4%"),
        # a bare number above 1 is a mistyped percentage or an amount without its unit
        ("flops", "1.5", "bare number above 1: did you mean 1.5%"),
        ("flops", "50", "did you mean 50%"),
        ("params", "150000", "did you mean 150K[?]"),
        ("size", "2500000", "did you mean 2.5MB[?]"),
        ("size", "1e2", "did you mean 100%"),
        ("size", "-1", "cannot read"),
        ("flops", "0", "positive"),
        ("flops", "150%", "ratio"),
        ("bogus", "0.5", "unknown budget"),
    ],
)
def test_parse_budget_errors(metric: str, text: str, fragment: str) -> None:
    with pytest.raises(AutoshrinkError, match=fragment):
        parse_budget(metric, text)


def test_budget_limit_and_str() -> None:
    assert Budget("flops", 0.5).limit(1000.0) == 500.0
    assert Budget("size", 300.0, relative=False).limit(1e9) == 300.0
    assert "of baseline" in str(Budget("params", 0.5))
    assert format_amount("flops", 1.5e6) == "1.5M MACs"
    assert format_amount("size", 3e5) == "300KB"
    assert format_amount("latency", 0.004) == "4ms"


def test_config_parses_budgets_and_defaults() -> None:
    cfg = EnvConfig(flops="1.5M", size=0.1)
    assert cfg.flops == Budget("flops", 1.5e6, relative=False)
    assert cfg.size == Budget("size", 0.1)
    assert set(cfg.budgets) == {"flops", "size"}
    assert set(EnvConfig(mode="prune").budgets) == {"flops"}
    assert set(EnvConfig(mode="quant").budgets) == {"size"}
    assert EnvConfig().reward == "accuracy"
    assert EnvConfig(hard=False).reward == "penalty"
    assert EnvConfig(bit_choices=(8, 4, 4, 2)).bit_choices == (2, 4, 8)


def test_config_json_round_trip() -> None:
    cfg = EnvConfig(model="smallcnn", mode="prune", flops="30%", latency="3ms", finetune_steps=3)
    text = json.dumps(cfg.to_dict())
    back = EnvConfig.from_dict(json.loads(text))
    assert back == cfg
    assert EnvConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(AutoshrinkError, match="malformed"):
        EnvConfig.from_json("{")
    assert cfg.to_dict()["type"] == "autoshrink.EnvConfig"
    assert cfg.to_dict()["version"] == 3


def test_version_1_config_keeps_the_absolute_keep_action() -> None:
    old = EnvConfig(model="smallcnn").to_dict()
    old["version"] = 1
    del old["data"]["keep_action"]
    assert EnvConfig.from_dict(old).keep_action == "absolute"
    assert EnvConfig().keep_action == "budget"
    with pytest.raises(AutoshrinkError, match="keep_action"):
        EnvConfig(keep_action="relative")


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"type": "other"}, "not an environment config"),
        ({"type": "autoshrink.EnvConfig", "version": 99, "data": {}}, "version"),
        ({"type": "autoshrink.EnvConfig", "version": 1, "data": {"nope": 1}}, "nope"),
    ],
)
def test_config_from_dict_refuses(obj: dict[str, object], fragment: str) -> None:
    with pytest.raises(AutoshrinkError, match=fragment):
        EnvConfig.from_dict(obj)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"mode": "shrink"}, "mode must be one of"),
        ({"reward": "speed"}, "reward must be one of"),
        ({"hard": False, "reward": "accuracy"}, "soft budgets"),
        ({"min_keep": 0.0}, "min_keep"),
        ({"min_keep": 1.5}, "min_keep"),
        ({"bit_choices": (1, 4)}, "bit_choices"),
        ({"bit_choices": ()}, "bit_choices"),
        ({"first_last_bits": 9}, "first_last_bits"),
        ({"finetune_steps": -1}, "finetune_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"eval_batches": 0}, "eval_batches"),
        ({"finetune_lr": 0.0}, "finetune_lr"),
    ],
)
def test_config_validation(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(AutoshrinkError, match=fragment):
        EnvConfig(**kwargs)


def test_config_lists_every_problem() -> None:
    with pytest.raises(AutoshrinkError) as info:
        EnvConfig(mode="x", min_keep=2.0, batch_size=0)
    message = str(info.value)
    assert "mode" in message and "min_keep" in message and "batch_size" in message


def test_replace_validates_and_refuses_unknown() -> None:
    cfg = EnvConfig().replace(flops="0.3", mode="prune")
    assert cfg.flops == Budget("flops", 0.3)
    assert cfg.replace(hard=False).reward == "penalty"
    assert cfg.replace(hard=False).replace(hard=True).reward == "accuracy"
    with pytest.raises(AutoshrinkError, match="soft budgets"):
        EnvConfig(reward="acc_flops").replace(hard=False)  # an explicit reward is kept
    with pytest.raises(AutoshrinkError, match="unknown environment setting"):
        EnvConfig().replace(colour="red")


def test_a_bare_number_above_1_is_refused_as_a_number_too() -> None:
    """A TOML spec's ``flops = 50`` or the API's ``flops=50`` reads as the text ``50`` does."""
    with pytest.raises(AutoshrinkError, match="did you mean 50%"):
        parse_budget("flops", 50)
    with pytest.raises(AutoshrinkError, match="did you mean 50%"):
        EnvConfig(flops=50)
