"""Searches in deep and sparse mode on the real env, and the deep-compression baseline."""

from __future__ import annotations

import numpy as np
import pytest

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.scripted import DeepCompressionSearch
from autoshrink.agent.scripted_view import EnvView
from autoshrink.agent.search.config import FinalConfig, SearchConfig
from autoshrink.agent.search.finish import finish_search
from autoshrink.agent.search.loop import run_search
from autoshrink.compression.artifact import load_artifact, read_header
from autoshrink.compression.artifact_header import read_raw_header
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.quantize import quantizable_layers
from autoshrink.compression.sparsity import layer_sparsity, zeroed_count


def cfg(algorithm: str, episodes: int = 3) -> AgentConfig:
    return AgentConfig(
        algorithm=algorithm,
        episodes=episodes,
        warmup_episodes=1,
        batch_size=8,
        policy_kwargs={"net_arch": [16, 16]},
    )


def test_deep_compression_is_global_magnitude_at_one_bit_width(make_env) -> None:
    env = make_env(mode="deep", size=0.1)
    candidates = DeepCompressionSearch(env, cfg("deep-compression"), len(env.units)).candidates(
        EnvView(env)
    )
    assert len(candidates) > 1  # one per bit-width that fits
    spreads = []
    for actions in candidates:
        env.reset()
        for row in actions:
            *_, info = env.step(row)
        policy = info["policy"]
        assert not info["clamped"] and info["bytes"] <= env.limits["size"]
        assert env._channels == [u.c_out for u in env.units]  # no channel pruned
        (bits,) = {u.bits for u in policy.units.values()}
        spars = [u.sparsity for u in policy.units.values()]
        spreads.append(np.ptp(spars))
        if max(spars) > 0:  # tight: a grid step less sparsity everywhere would not fit
            less = [max(0.0, s - 0.01) for s in spars]
            assert not EnvView(env).feasible(env._channels, bits, less)
    assert max(spreads) > 0  # the global threshold zeroes more of some units than others


def test_deep_compression_needs_a_sparse_mode() -> None:
    with pytest.raises(AutoshrinkError, match="mode deep or sparse"):
        SearchConfig.create(agent="deep-compression", mode="joint")
    assert SearchConfig.create(agent="deep-compression", mode="sparse").env.mode == "sparse"


@pytest.mark.parametrize(
    ("algorithm", "mode"),
    [("ddpg", "deep"), ("random", "sparse"), ("uniform", "deep"), ("deep-compression", "deep")],
)
def test_agents_search_deep_modes_and_ship_a_sparse_artifact(
    tmp_path, make_env, algorithm: str, mode: str
) -> None:
    env = make_env(mode=mode, size=0.08)
    search = run_search(env, cfg(algorithm), tmp_path / "run")
    assert env.evaluator.calls == 3
    report = finish_search(env, search, FinalConfig(epochs=1, latency_repeats=2))
    compressed = report["compressed"]
    path = tmp_path / "run" / report["artifact"]
    assert compressed["bytes"] == compressed["bound_bytes"] <= env.limits["size"]
    assert compressed["artifact_bytes"] <= compressed["bound_bytes"]
    assert (
        compressed["file_bytes"]
        <= compressed["bound_bytes"] + 8 + read_raw_header(path).header_bytes
    )
    ratio = report["baseline"]["file_bytes"] / compressed["file_bytes"]
    assert compressed["compression_ratio"] == pytest.approx(ratio) and ratio > 1
    policy = read_header(path).policy
    sparsity = layer_sparsity(policy, env.graph)  # type: ignore[arg-type]
    if sparsity:
        assert compressed["nonzero_macs_theoretical"] < compressed["macs"]
    model = load_artifact(path)  # zeroed weights stayed zero through the final fine-tune
    for name, s in sparsity.items():
        weight = quantizable_layers(model)[name].weight
        assert int((weight == 0).sum()) >= int(zeroed_count(weight.numel(), s))


def test_a_batch_grid_runs_deep_mode_agents_and_refuses_a_mismatch() -> None:
    from autoshrink.agent.batch.spec import SpecError, parse_spec

    spec = parse_spec(
        '[defaults]\nmode = "deep"\nmax_sparsity = 0.99\nepisodes = 3\n'
        '[grid]\nmodels = ["resnet20"]\nbudgets = [{ size = 0.02 }, { size = 0.01 }]\n'
        'agents = ["ddpg", "deep-compression"]\nseeds = [0]\n'
    )
    assert len(spec.jobs) == 4
    for job in spec.jobs:
        assert job.search_config().env.mode == "deep"
        assert job.env_config().max_sparsity == 0.99
    with pytest.raises(SpecError, match="mode deep or sparse"):
        parse_spec('[grid]\nmodels = ["resnet20"]\nagents = ["deep-compression"]\n')


def test_deep_compression_prunes_channels_only_where_nothing_else_fits(make_env) -> None:
    env = make_env(mode="deep", size=0.012, max_sparsity=0.99)  # below every full-width policy
    view = EnvView(env)
    assert not any(
        view.feasible(view.max_channels(), b, [0.99] * len(env.units)) for b in view.bit_options()
    )
    (actions,) = DeepCompressionSearch(env, cfg("deep-compression"), len(env.units)).candidates(
        view
    )
    env.reset()
    for row in actions:
        *_, info = env.step(row)
    assert info["budgets_met"] and info["bytes"] <= env.limits["size"]
    assert {u.sparsity for u in info["policy"].units.values()} == {0.99}
    assert sum(env._channels) < sum(view.max_channels())


def test_finalists_of_a_deep_search_are_the_policies_their_episodes_realised(
    tmp_path, make_env
) -> None:
    import json

    from autoshrink.agent.search.finalists import (
        policy_from_record,
        record_distance,
        top_candidates,
    )

    env = make_env(mode="deep", size=0.08)
    search = run_search(env, cfg("random", episodes=4), tmp_path / "run")
    lines = (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert all("sparsity" in r for r in records)
    for r in records:  # a record rebuilds its own policy, sparsity included, within budget
        policy = policy_from_record(r, search.best_policy)
        assert {n: u.sparsity for n, u in policy.units.items()} == r["sparsity"]
        assert env.clamp.feasible(
            [env.units[i].kept(policy.units[u.name].keep) for i, u in enumerate(env.units)],
            [policy.units[u.name].bits for u in env.units],
            [policy.units[u.name].sparsity for u in env.units],
        )
    a, b = dict(records[0]), dict(records[0])
    b["sparsity"] = {n: s + 0.1 for n, s in a["sparsity"].items()}
    assert record_distance(a, b, a["keep"]) == pytest.approx(0.1)
    assert len(top_candidates(records, search.best_policy, 4)) == len(
        {json.dumps([r["keep"], r["bits"], r["sparsity"]]) for r in records}
    )
