"""Per-layer weight quantization (and optional activation quantization) for simulation.

Weights are quantized linearly and symmetrically, per output channel: for ``b`` bits,
``qmax = 2**(b-1) - 1``, ``scale_c = max|w_c| / qmax`` (1 where a channel is all zero) and
``q = clamp(round(w / scale), -qmax, qmax)``. 32 bits means float: the layer is left alone.
The dequantized weight ``q * scale`` is exactly what a saved artifact reproduces, so the
simulation and the artifact agree bit for bit.

Three ways to apply it:

- :func:`quantize_weights_` replaces weights once by their dequantized values, for
  evaluation: no overhead on any forward pass.
- :func:`fake_quantize_` registers a ``torch.nn.utils.parametrize`` parametrization with a
  straight-through estimator, so a short fine-tune learns under quantization;
  :func:`bake_` then removes it and leaves the quantized weights.
- :func:`calibrate_activations_` adds per-tensor fake quantization of layer inputs
  (forward pre-hooks), calibrated on a few training batches.

>>> m = torch.nn.Sequential(torch.nn.Linear(4, 1))
>>> _ = m[0].weight.data.copy_(torch.tensor([[0.9, -0.2, 0.6, -1.0]]))
>>> _ = quantize_weights_(m, {"0": 2})  # 2 bits: each weight becomes -s, 0 or +s
>>> m[0].weight.tolist()
[[1.0, 0.0, 1.0, -1.0]]
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from autoshrink.compression.errors import PolicyError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import check_bits

if TYPE_CHECKING:
    from autoshrink.compression.unit_graph import UnitGraph

logger = logging.getLogger(__name__)

QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# --- weights ---------------------------------------------------------------------------
def quantize_per_channel(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a weight symmetrically per output channel (dim 0).

    Args:
        weight: A conv or linear weight, output channels first.
        bits: 2..8.

    Returns:
        ``(q, scale)``: int8 values in ``[-qmax, qmax]`` shaped like ``weight``, and one
        float32 scale per output channel.
    """
    qmax = (1 << (bits - 1)) - 1
    w = weight.detach().to(torch.float32)
    amax = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    view = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(view)), -qmax, qmax).to(torch.int8)
    return q, scale


def dequantize_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Return ``q * scale`` (per output channel) as float32."""
    return q.to(torch.float32) * scale.view((-1,) + (1,) * (q.dim() - 1))


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize then dequantize ``weight`` at ``bits`` (32 returns it unchanged)."""
    if bits >= FLOAT_BITS:
        return weight
    q, scale = quantize_per_channel(weight, bits)
    return dequantize_per_channel(q, scale).to(weight.dtype)


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv and linear layers of ``model`` by qualified name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QUANTIZABLE)}


def check_layer_bits(model: nn.Module, bits_by_layer: Mapping[str, int]) -> dict[str, int]:
    """Validate a per-layer bit assignment against ``model``.

    Raises:
        PolicyError: On bits outside {2..8, 32} or a name that is not a conv/linear layer.
    """
    layers = quantizable_layers(model)
    out: dict[str, int] = {}
    for name, bits in bits_by_layer.items():
        check_bits(bits, f"layer {name or '<root>'}")
        if name not in layers:
            raise PolicyError(f"no conv or linear layer named {name!r} in the model")
        out[name] = bits
    return out


def quantize_weights_(model: nn.Module, bits_by_layer: Mapping[str, int]) -> nn.Module:
    """Replace each listed layer's weight, in place, by its dequantized value.

    Args:
        model: The model to quantize.
        bits_by_layer: Weight bits per layer name; 32 or absent leaves a layer in float.

    Returns:
        ``model``, for chaining.

    Raises:
        PolicyError: On invalid bits or unknown layer names.
    """
    layers = quantizable_layers(model)
    with torch.no_grad():
        for name, bits in check_layer_bits(model, bits_by_layer).items():
            module = layers[name]
            _unparametrize_(module, keep_quantized=False)  # fake-quantized: start over
            if bits < FLOAT_BITS:
                weight = _weight(module)
                weight.copy_(fake_quantize(weight, bits))
    return model


def _weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor")
    return weight


class _RoundSTE(torch.autograd.Function):
    """Forward: the exact fake-quantized weight. Backward: the identity (straight through)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, bits: int) -> torch.Tensor:
        return fake_quantize(weight, bits)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class WeightFakeQuant(nn.Module):
    """A parametrization that fake-quantizes a weight with a straight-through estimator."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Return the fake-quantized weight; gradients flow to the float weight unchanged."""
        out: torch.Tensor = _RoundSTE.apply(weight, self.bits)
        return out

    def extra_repr(self) -> str:
        """Show the bit width in the module's repr."""
        return f"bits={self.bits}"


def fake_quantize_(model: nn.Module, bits_by_layer: Mapping[str, int]) -> nn.Module:
    """Register straight-through fake quantization on each listed layer's weight, in place.

    The float weights stay trainable; every forward sees them quantized. Call :func:`bake_`
    after fine-tuning.

    Raises:
        PolicyError: On invalid bits or unknown layer names.
    """
    layers = quantizable_layers(model)
    for name, bits in check_layer_bits(model, bits_by_layer).items():
        module = layers[name]
        _unparametrize_(module, keep_quantized=False)
        if bits < FLOAT_BITS:
            parametrize.register_parametrization(module, "weight", WeightFakeQuant(bits))
    return model


def bake_(model: nn.Module) -> nn.Module:
    """Remove the weight parametrizations :func:`fake_quantize_` added, keeping quantized values.

    Afterwards the model equals ``quantize_weights_(model_before, same bits)``. The weight
    stays the same ``nn.Parameter`` object, so an optimizer holding it keeps working.
    """
    for module in model.modules():
        _unparametrize_(module, keep_quantized=True)
    return model


def _unparametrize_(module: nn.Module, keep_quantized: bool) -> None:
    """Undo :func:`fake_quantize_` on one module, touching only this instance.

    ``parametrize.remove_parametrizations`` deletes the weight property from the module's
    class, and ``copy.deepcopy`` shares that generated class between original and copy:
    baking a copy would break the original. So the class is swapped back here instead.
    """
    if not parametrize.is_parametrized(module, "weight"):
        return
    plist = module.parametrizations["weight"]  # type: ignore[index]
    if not all(isinstance(p, WeightFakeQuant) for p in plist) or set(
        module.parametrizations  # type: ignore[arg-type]
    ) != {"weight"}:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=keep_quantized)
        return
    original: nn.Parameter = plist.original  # type: ignore[union-attr]
    with torch.no_grad():
        value = _weight(module).detach().clone() if keep_quantized else None
        del module._modules["parametrizations"]
        module.__class__ = module.__class__.__bases__[0]
        if value is not None:
            original.copy_(value)
    module.register_parameter("weight", original)


# --- activations -----------------------------------------------------------------------
class ActFakeQuant:
    """A forward pre-hook fake-quantizing a layer's input per tensor (affine, unsigned).

    The calibrated range ``[lo, hi]`` (widened to include 0) maps onto ``0..2**bits-1`` with a
    zero point; post-ReLU inputs (``lo = 0``) use every level. Gradients pass straight
    through inside the range (``torch.fake_quantize_per_tensor_affine``).
    """

    def __init__(self, bits: int, lo: float, hi: float) -> None:
        self.bits, self.lo, self.hi = bits, min(lo, 0.0), max(hi, 0.0)
        levels = (1 << bits) - 1
        self.scale = (self.hi - self.lo) / levels if self.hi > self.lo else 1.0
        self.zero_point = int(min(max(round(-self.lo / self.scale), 0), levels))

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Fake-quantize the first positional input of ``module``."""
        x = torch.fake_quantize_per_tensor_affine(
            args[0], self.scale, self.zero_point, 0, (1 << self.bits) - 1
        )
        return (x, *args[1:])


def _act_hooks(module: nn.Module) -> list[int]:
    return [k for k, h in module._forward_pre_hooks.items() if isinstance(h, ActFakeQuant)]


def remove_activation_quant_(model: nn.Module) -> nn.Module:
    """Remove every activation fake-quant hook from ``model``, in place."""
    for module in model.modules():
        for key in _act_hooks(module):
            del module._forward_pre_hooks[key]
    return model


def activation_quant_state(model: nn.Module) -> dict[str, tuple[int, float, float]]:
    """The installed activation quantizers as ``{layer: (bits, lo, hi)}`` (JSON-ready)."""
    out = {}
    for name, module in model.named_modules():
        for key in _act_hooks(module):
            h = module._forward_pre_hooks[key]
            out[name] = (h.bits, h.lo, h.hi)
    return out


def set_activation_quant_(
    model: nn.Module, state: Mapping[str, tuple[int, float, float] | list[Any]]
) -> nn.Module:
    """Install activation quantizers from :func:`activation_quant_state` output, in place."""
    remove_activation_quant_(model)
    for name, (bits, lo, hi) in state.items():
        check_bits(int(bits), f"activations of layer {name}")
        if int(bits) < FLOAT_BITS:
            model.get_submodule(name).register_forward_pre_hook(
                ActFakeQuant(int(bits), float(lo), float(hi))
            )
    return model


def calibrate_activations_(
    model: nn.Module,
    act_bits_by_layer: Mapping[str, int],
    loader: Iterable[Any],
    n_batches: int = 4,
) -> nn.Module:
    """Calibrate per-tensor input ranges on a few batches, then fake-quantize those inputs.

    Args:
        model: The model (its current weights, quantized or not, are used for calibration).
        act_bits_by_layer: Input bits per conv/linear layer; 32 or absent = float.
        loader: Yields input batches, or ``(inputs, targets)`` pairs.
        n_batches: How many batches to observe.

    Returns:
        ``model``, with forward pre-hooks installed.

    Raises:
        PolicyError: On invalid bits or unknown layer names.
    """
    wanted = {n: b for n, b in check_layer_bits(model, act_bits_by_layer).items() if b < 32}
    ranges: dict[str, list[float]] = {}

    def observer(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach()
            lo, hi = float(x.min()), float(x.max())
            old = ranges.setdefault(name, [lo, hi])
            old[0], old[1] = min(old[0], lo), max(old[1], hi)

        return hook

    remove_activation_quant_(model)
    handles = [model.get_submodule(n).register_forward_pre_hook(observer(n)) for n in wanted]
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    try:
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if i >= n_batches:
                    break
                x = batch[0] if isinstance(batch, tuple | list) else batch
                model(x.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = sorted(set(wanted) - set(ranges))
    if missing:
        raise PolicyError(f"layers never ran during calibration: {missing[:5]}")
    state = {n: (b, ranges[n][0], ranges[n][1]) for n, b in wanted.items()}
    return set_activation_quant_(model, state)


# --- first and last layers -------------------------------------------------------------
def first_and_last_layers(model_or_graph: nn.Module | UnitGraph) -> tuple[str, str]:
    """Names of the first conv/linear layer and the output layer, in execution order.

    For a model, the order comes from an FX trace (falling back to registration order when
    the model cannot be traced); for a unit graph, from its layer list. HAQ pins these two
    layers to 8 bits: pass them as ``Policy.layers`` overrides.

    Raises:
        PolicyError: If there is no conv or linear layer.
    """
    if isinstance(model_or_graph, nn.Module):
        names = _execution_order(model_or_graph)
    else:
        names = [layer.name for layer in model_or_graph.layers]
    if not names:
        raise PolicyError("the model has no conv or linear layer")
    return names[0], names[-1]


def pinned_layers(graph: UnitGraph) -> tuple[str, ...]:
    """The layers whose bits a search pins instead of deciding, in execution order.

    The first and the last layer, as HAQ pins them, and every layer whose output channels
    no unit decides (a frozen group's, the classifier's): no action reaches their bits,
    so they take the pinned bit-width rather than staying float.
    """
    first, last = first_and_last_layers(graph)
    return tuple(
        layer.name for layer in graph.layers if layer.name in (first, last) or layer.unit is None
    )


def _execution_order(model: nn.Module) -> list[str]:
    layers = quantizable_layers(model)
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # untraceable control flow: registration order is the best guess
        logger.debug("FX trace failed (%s); using registration order", exc)
        return list(layers)
    order: list[str] = []
    for node in graph.nodes:
        if node.op == "call_module" and node.target in layers and node.target not in order:
            order.append(str(node.target))
    return order or list(layers)
