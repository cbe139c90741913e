"""timm:NAME models: built with pretrained=False, pruned exactly, clear errors otherwise."""

from __future__ import annotations

import builtins
import sys
from typing import Any

import pytest
import torch

from autoshrink.compression import models
from autoshrink.compression.errors import CheckpointError, UnsupportedModelError
from autoshrink.compression.models import ModelSpec, build_model
from tests.compression.exact import assert_exact


def test_a_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_timm(name: str, *args: Any, **kw: Any) -> Any:
        if name == "timm" or name.startswith("timm."):
            raise ImportError("No module named 'timm'")
        return real_import(name, *args, **kw)

    monkeypatch.delitem(sys.modules, "timm", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(UnsupportedModelError, match=r"autoshrink\[timm\]"):
        build_model(ModelSpec("timm:resnet18"))


def test_pretrained_is_only_for_timm_models() -> None:
    with pytest.raises(UnsupportedModelError, match="only fetched for timm"):
        build_model(ModelSpec("resnet20", pretrained=True))


def test_spec_dict_is_unchanged_unless_pretrained() -> None:
    assert ModelSpec("timm:resnet18").to_dict() == {
        "name": "timm:resnet18",
        "num_classes": 10,
        "in_channels": 3,
    }
    spec = ModelSpec("timm:resnet18", pretrained=True)
    assert ModelSpec.from_dict(spec.to_dict()) == spec


timm = pytest.importorskip("timm")


def test_unknown_timm_name_is_one_clear_line() -> None:
    with pytest.raises(UnsupportedModelError, match="unknown timm model 'no_such_net'"):
        build_model(ModelSpec("timm:no_such_net"))


def test_pretrained_without_a_network_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(CheckpointError, match="not reachable") as err:
        build_model(ModelSpec("timm:resnet18", pretrained=True))
    assert "\n" not in str(err.value)


def test_timm_model_gets_the_spec_shape_and_random_weights() -> None:
    torch.manual_seed(0)
    a = build_model(ModelSpec("timm:lcnet_050", num_classes=7, in_channels=1))
    torch.manual_seed(1)
    b = build_model(ModelSpec("timm:lcnet_050", num_classes=7, in_channels=1))
    assert not a.training
    assert a(torch.zeros(1, 1, 32, 32)).shape == (1, 7)
    assert not torch.equal(a.conv_stem.weight, b.conv_stem.weight)  # not a fixed checkpoint


# The smallest models of families that timm builds with fused norms (BatchNormAct2d),
# squeeze-excite and depthwise blocks; each takes a few seconds at 32x32.
SMALL = ["lcnet_050", "mobilenetv3_small_050", "regnety_002", "efficientnet_b0"]


@pytest.mark.parametrize("name", SMALL)
def test_small_timm_models_are_exact(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(f"timm:{name}"))
    graph = assert_exact(model, torch.randn(1, 3, 32, 32), policies=2)
    assert len(graph.units) >= 5


def test_timm_convnext_atto_residual_stream_is_a_unit() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec("timm:convnext_atto"))
    graph = assert_exact(model, torch.randn(1, 3, 32, 32), policies=2)
    assert "stem.0" in graph.unit_names  # the stem's group holds norms and layer scales


class _Shapes:
    num_classes, in_channels, image_size = 10, 3, 32


def test_a_fixed_size_timm_model_is_built_for_the_data() -> None:
    spec = ModelSpec.for_data("timm:deit_tiny_patch16_224", _Shapes())
    assert spec.image_size == 32 and spec.to_dict()["image_size"] == 32
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert build_model(spec)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", ["timm:efficientnet_b0", "resnet20", "resnet18"])
def test_other_specs_and_their_cache_keys_are_unchanged(name: str) -> None:
    spec = ModelSpec.for_data(name, _Shapes())
    assert spec == ModelSpec(name, 10, 3)
    assert "image_size" not in spec.to_dict()
