"""The one vocabulary of budget metrics: their names, result keys and units.

A budget is named as the user gives it (``--flops``, ``--size``); a result names what was
counted (``macs``, ``bytes``). Every map between the two, every list of budget names and
every unit in the tool comes from :data:`METRICS`:

==========  =============  ==============  ===========================================
budget      result key     ratio key       unit
==========  =============  ==============  ===========================================
``flops``   ``macs``       ``macs_ratio``  multiply-accumulates (AMC counts MACs)
``params``  ``params``     ``params_ratio`` parameters
``size``    ``bytes``      ``bytes_ratio`` bytes of the compressed payload
``latency`` ``latency_s``  ``latency_ratio`` seconds, from the per-unit lookup table
==========  =============  ==============  ===========================================

Latency is always in seconds and always named ``latency_s``; a latency *measured* by
timing a model (not the table's estimate) is ``measured_latency_s``.

>>> result_key("size")
'bytes'
>>> [m.name for m in METRICS]
['flops', 'params', 'size', 'latency']
"""

from __future__ import annotations

from dataclasses import dataclass

#: The bit-width that means "not quantized": a float32 weight.
FLOAT_BITS = 32


@dataclass(frozen=True)
class Metric:
    """One budget metric.

    Args:
        name: The budget's name, as flags, configs and specs give it.
        key: The key its value has in results, episode records and ``info``.
        ratio_key: The key of its ratio to the uncompressed model.
        unit: What one of it is, for people.
    """

    name: str
    key: str
    ratio_key: str
    unit: str


METRICS: tuple[Metric, ...] = (
    Metric("flops", "macs", "macs_ratio", "MACs"),
    Metric("params", "params", "params_ratio", "params"),
    Metric("size", "bytes", "bytes_ratio", "bytes"),
    Metric("latency", "latency_s", "latency_ratio", "s"),
)
#: The budget names, in their canonical order.
BUDGET_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
#: The key of a latency measured by timing a model, in seconds.
MEASURED_LATENCY = "measured_latency_s"
_BY_NAME = {m.name: m for m in METRICS}


def result_key(name: str) -> str:
    """The result key of budget ``name`` (``flops`` -> ``macs``)."""
    return _BY_NAME[name].key


def ratio_key(name: str) -> str:
    """The ratio key of budget ``name`` (``flops`` -> ``macs_ratio``)."""
    return _BY_NAME[name].ratio_key


def by_result_key(values: dict[str, float]) -> dict[str, float]:
    """``values`` keyed by budget name, re-keyed by result key (other keys are dropped)."""
    return {_BY_NAME[k].key: v for k, v in values.items() if k in _BY_NAME}
