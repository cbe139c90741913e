"""One forward pass before training: a model that cannot classify the data is refused.

``autoshrink train`` and a search that trains its baseline first call
:func:`check_classifier`, so that a model whose forward raises, that wants another image
size (``vit_h_14`` on 8x8 digits), or that returns a feature map instead of logits is
refused in one line before a progress bar starts, not after minutes of training or deep in
the loss function.
"""

from __future__ import annotations

import torch
from torch import nn

from autoshrink.compression.errors import UnsupportedModelError
from autoshrink.compression.models import run_user_code

#: Images of the probe batch: two, so that a model that squeezes its batch is caught too.
PROBE_BATCH = 2


def check_classifier(model: nn.Module, example: torch.Tensor, num_classes: int, name: str) -> None:
    """Run ``model`` once on ``example`` and check it returns ``(N, num_classes)`` logits.

    The model is run in eval mode without gradients, on the CPU copy it is; its training
    mode is restored.

    Args:
        model: The freshly built model.
        example: A batch of zeros of the data's shape (``DataSplits.example_input``).
        num_classes: The dataset's classes.
        name: The model's name, as the user gave it.

    Raises:
        UnsupportedModelError: If the forward pass raises, or returns anything but a tensor
            of shape ``(len(example), num_classes)``.
    """
    shape = "x".join(str(d) for d in example.shape)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = run_user_code(lambda: model(example), f"model {name} on a {shape} input")
    finally:
        model.train(training)
    want = (example.shape[0], num_classes)
    if not isinstance(out, torch.Tensor):
        raise UnsupportedModelError(
            f"model {name} returns {type(out).__name__} on a {shape} input, not a tensor of "
            f"logits of shape {want}"
        )
    if tuple(out.shape) != want:
        got = "x".join(str(d) for d in out.shape)
        raise UnsupportedModelError(
            f"model {name} returns a {got} tensor on a {shape} input; training needs logits "
            f"of shape {want[0]}x{want[1]} (batch x classes)"
        )
