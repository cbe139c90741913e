"""The model zoo: CIFAR-style ResNets, a small CNN, torchvision models and user factories.

Every model is described by a :class:`ModelSpec` (a name plus the few numbers needed to
rebuild it), so that a compressed artifact can rebuild its base architecture without
pickling any code.

>>> model = build_model(ModelSpec("resnet20", num_classes=10, in_channels=1))
>>> sum(p.numel() for p in model.parameters()) > 0
True
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from autoshrink.compression.errors import CheckpointError, UnsupportedModelError
from autoshrink.compression.model_spec import ModelSpec
from autoshrink.compression.names import CIFAR_RESNET_DEPTHS, ZOO_MODELS
from autoshrink.compression.timm_models import TIMM_PREFIX, _build_timm, _hub_reachable

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


class BasicBlock(nn.Module):
    """The two-conv residual block of CIFAR ResNets, with a 1x1 projection when shapes change."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual forward pass."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images (He et al. 2016, section 4.2), widths 16-32-64."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise UnsupportedModelError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers: list[nn.Module] = []
        in_planes = 16
        for stage, planes in enumerate((16, 32, 64)):
            blocks: list[nn.Module] = []
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch of images."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SmallCNN(nn.Module):
    """A plain four-conv network: the quickest model to train and search."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(in_channels, 32, 1), block(32, 64, 2), block(64, 64, 1), block(64, 128, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch of images."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _zoo() -> dict[str, Callable[[int, int], nn.Module]]:
    zoo: dict[str, Callable[[int, int], nn.Module]] = {
        name: partial(CifarResNet, depth) for name, depth in CIFAR_RESNET_DEPTHS.items()
    }
    zoo["smallcnn"] = SmallCNN
    return zoo


def torchvision_models() -> list[str]:
    """Names of the torchvision classification models that :func:`build_model` accepts."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first convolution for one that takes ``in_channels`` input channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == in_channels:
                return
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,  # type: ignore[arg-type]
                module.stride,  # type: ignore[arg-type]
                module.padding,  # type: ignore[arg-type]
                module.dilation,  # type: ignore[arg-type]
                1,
                module.bias is not None,
            )
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, new)
            return


#: Most elements of an example input (a float32 batch of 256 MB): a larger shape is a typo
#: or a hostile file, and would exhaust memory when traced.
MAX_INPUT_ELEMENTS = 1 << 26


def check_input_shape(shape: Sequence[object], where: str) -> tuple[int, ...]:
    """Return ``shape`` as ints if it is 2 to 8 positive integers of sane total size.

    Raises:
        UnsupportedModelError: Naming ``where`` (e.g. ``"--input-shape"``) otherwise.
    """
    if not 2 <= len(shape) <= 8 or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
    ):
        raise UnsupportedModelError(
            f"{where} must be 2 to 8 positive integers, got {list(shape)!r}"[:200]
        )
    dims = tuple(int(d) for d in shape)  # type: ignore[call-overload]
    if math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise UnsupportedModelError(
            f"{where} {'x'.join(map(str, dims))} has {math.prod(dims):,} elements, more than "
            f"the {MAX_INPUT_ELEMENTS:,} allowed"[:200]
        )
    return dims


def is_factory_ref(name: str) -> bool:
    """Whether a model name is a user factory ``path/to/file.py:fn`` (which runs code)."""
    return ":" in name and name.rpartition(":")[0].endswith(".py")


@dataclass(frozen=True)
class FactorySource:
    """Where a user factory's code is and what it was, recorded without importing it.

    Args:
        path: The resolved path of the ``.py`` file.
        function: The factory's name in it.
        sha256: SHA-256 of the file's bytes.
    """

    path: str
    function: str
    sha256: str


def factory_source(ref: str) -> FactorySource:
    """Resolve and hash the file of ``path.py:fn`` (reads it; never imports it).

    Raises:
        UnsupportedModelError: If ``ref`` is not a factory reference or its file is missing.
    """
    if not is_factory_ref(ref):
        raise UnsupportedModelError(f"{ref!r} is not a path/to/file.py:factory reference")
    path_str, _, fn_name = ref.rpartition(":")
    path = Path(path_str).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnsupportedModelError(f"model file not readable: {path}: {exc.strerror}") from None
    return FactorySource(str(path.resolve()), fn_name, hashlib.sha256(data).hexdigest())


def _load_user_factory(ref: str) -> Callable[..., nn.Module]:
    path_str, _, fn_name = ref.rpartition(":")
    path = Path(path_str)
    if not path.is_file():
        raise UnsupportedModelError(f"model file not found: {path}")
    module_name = f"autoshrink_user_model_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UnsupportedModelError(f"cannot import model file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    loader = spec.loader
    run_user_code(lambda: loader.exec_module(module), f"importing {path}")
    factory = getattr(module, fn_name, None)
    if not callable(factory):
        raise UnsupportedModelError(f"{path} has no callable named {fn_name!r}")
    return factory


def build_model(spec: ModelSpec) -> nn.Module:
    """Build the (untrained) base model that ``spec`` names.

    Args:
        spec: The model's name and shape parameters.

    Returns:
        A freshly initialised ``nn.Module`` in eval mode.

    Raises:
        UnsupportedModelError: If the name is neither in the zoo, nor a torchvision model,
            nor a timm model (or timm is not installed), nor a loadable ``file.py:factory``.
        CheckpointError: If pretrained weights are asked for and cannot be fetched.
    """
    zoo = _zoo()
    if spec.pretrained and not spec.name.startswith(TIMM_PREFIX):
        raise UnsupportedModelError(
            f"pretrained weights are only fetched for timm:NAME models, not {spec.name!r}; "
            "pass a checkpoint instead"
        )
    if spec.name.startswith(TIMM_PREFIX):
        model = _build_timm(spec, _hub_reachable)  # looked up here: tests patch it on models
    elif spec.name in zoo:
        model = zoo[spec.name](spec.num_classes, spec.in_channels)
    elif is_factory_ref(spec.name):
        factory = _load_user_factory(spec.name)
        params = inspect.signature(factory).parameters
        kwargs = {
            k: v
            for k, v in (("num_classes", spec.num_classes), ("in_channels", spec.in_channels))
            if k in params
        }
        model = run_user_code(lambda: factory(**kwargs), f"your factory {spec.name}")
        if not isinstance(model, nn.Module):
            raise UnsupportedModelError(
                f"{spec.name} returned {type(model).__name__}, not a Module"
            )
    else:
        import torchvision

        if spec.name not in torchvision_models():
            known = ", ".join(ZOO_MODELS)
            raise UnsupportedModelError(
                f"unknown model {spec.name!r}: use one of {known}, a torchvision "
                "classification model name, timm:NAME, or path/to/file.py:factory"
            )
        model = torchvision.models.get_model(spec.name, weights=None, num_classes=spec.num_classes)
        if spec.in_channels != 3:
            _replace_first_conv(model, spec.in_channels)
    return model.eval()


def run_user_code(call: Callable[[], _T], what: str) -> _T:
    """``call()``, user code: whatever it raises or exits with becomes one refusal line.

    An exception, a ``BaseException`` of its own, a ``MemoryError``, a ``RecursionError``
    or a ``sys.exit(0)`` all become :class:`UnsupportedModelError` ("your factory
    mynet.py:make raised RuntimeError: ..."), with the original as its cause (shown under
    ``-v``). Only Ctrl-C goes through.

    Raises:
        UnsupportedModelError: If ``call`` raised or exited.
    """
    try:
        return call()
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        raise UnsupportedModelError(f"{what} called sys.exit({exc.code!r})") from exc
    except BaseException as exc:  # user code: report whatever it raised, in one line
        said = str(exc)
        detail = f"{type(exc).__name__}: {said[:300]}" if said else type(exc).__name__
        verb = "failed with" if what.startswith("importing") else "raised"
        raise UnsupportedModelError(f"{what} {verb} {detail}") from exc


def load_problem(exc: BaseException) -> str:
    """Torch's ``weights_only`` refusal is ten lines with ANSI codes: keep what it found."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"it holds a Python object ({found.group(1)}), not tensors; it was not unpickled"
    if text.startswith("Weights only load failed"):
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        detail = f" ({reason.group(1).strip()[:80]})" if reason else ""
        return f"not a PyTorch state dict{detail}; it was not unpickled"
    return " ".join(text.split())[:200]


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict saved by ``autoshrink train`` (or ``torch.save(state_dict)``).

    Loading never unpickles arbitrary objects: ``weights_only=True`` is always used, and a
    safetensors file is read with safetensors.

    Args:
        model: The model whose architecture the weights must match.
        path: A ``.pt``/``.pth`` state dict or a ``.safetensors`` file.

    Returns:
        The same model, with the weights loaded.

    Raises:
        CheckpointError: If the file is missing, unreadable, or for another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {load_problem(exc)}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict (names to tensors)")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} "
                f"vs {tuple(own[k].shape)})"
            )
        raise CheckpointError(f"checkpoint {path} is for another architecture: " + "; ".join(parts))
    model.load_state_dict(state)
    return model
