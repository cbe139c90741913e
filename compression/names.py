"""The names and numbers a command's ``--help`` shows, with no torch import behind them.

Datasets, zoo models and the baseline's training defaults live here, once, so that
``autoshrink train --help`` and ``export --help`` build their flags in a fraction of a
second; :mod:`.data`, :mod:`.models` and :mod:`.baselines` take them from here.
"""

from __future__ import annotations

from autoshrink.compression.errors import DataError

#: What ``export`` writes, and the ONNX exporters it can use.
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
EXPORTERS: tuple[str, ...] = ("auto", "dynamo", "legacy")
#: Where latency is measured (budgets, the latency table, ``evaluate``): eager PyTorch,
#: ``torch.compile``, or onnxruntime (the ``[onnx]`` extra).
RUNTIMES: tuple[str, ...] = ("eager", "compiled", "onnxruntime")
DEFAULT_RUNTIME = "eager"
#: Dataset names (``imagefolder:PATH`` takes a folder).
DATASETS: tuple[str, ...] = (
    "digits",
    "fashion-mnist",
    "mnist",
    "cifar10",
    "cifar100",
    "imagefolder:PATH",
    "fake",
)
#: The CIFAR-style ResNets of the zoo, by depth.
CIFAR_RESNET_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56}
#: The zoo's own models (torchvision and timm names come on top).
ZOO_MODELS: tuple[str, ...] = (*CIFAR_RESNET_DEPTHS, "smallcnn")
DEFAULT_MODEL = "resnet20"
DEFAULT_DATASET = "digits"
DEFAULT_LR = 0.1
DEFAULT_BATCH_SIZE = 128
# ResNet-20 on 2 CPU cores. digits: 20 epochs gave 97.9-99.3 % val (97.2-98.6 % test) over
# seeds 0-5 in about 13 s; 15 epochs fell below 97 % val for one seed. Fashion-MNIST: about
# 6 min per epoch (estimated from timed steps); 5 epochs is an estimate for ~90-91 % test,
# not yet measured on the full set.
_DEFAULT_EPOCHS = {
    "digits": 20,
    "fashion-mnist": 5,
    "mnist": 3,
    "cifar10": 30,
    "cifar100": 30,
    "fake": 3,
}
_IMAGEFOLDER_EPOCHS = 10


def default_epochs(dataset: str) -> int:
    """Epochs that give a good baseline of the default model on ``dataset`` on a CPU."""
    if dataset.lower().startswith("imagefolder:"):
        return _IMAGEFOLDER_EPOCHS
    try:
        return _DEFAULT_EPOCHS[dataset.lower()]
    except KeyError:
        raise DataError(
            f"unknown dataset {dataset!r}: use one of {', '.join(_DEFAULT_EPOCHS)} "
            "or imagefolder:PATH"
        ) from None


#: Episodes a search evaluates at once, each in its own worker process (``--workers``).
DEFAULT_WORKERS = 1
#: The most workers (a search's episode workers, a batch's jobs at once) a run may ask for:
#: each is a process with its own pipes, and 100,000 of them run out of file handles.
MAX_WORKERS = 256
#: The most torch threads a run may ask for: a hundred million make torch crash (SIGSEGV).
MAX_THREADS = 1024
#: Where a search's workers run: ``local`` processes (SB3's SubprocVecEnv) or Ray actors.
SEARCH_BACKENDS: tuple[str, ...] = ("local", "ray")
DEFAULT_BACKEND = "local"
#: Seeds lie in [0, MAX_SEED]: numpy refuses any other (a seed of 2**64 failed job by job).
MAX_SEED = 2**32 - 1
