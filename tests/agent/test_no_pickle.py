"""agent.zip and checkpoints load without unpickling anything a user could have written.

SB3 cloudpickles some entries of an agent.zip's ``data`` (spaces, classes, schedules, the
noise); the loaders in :mod:`autoshrink.agent.algorithms` hand SB3 a replacement for each,
and the replay buffer is a ``.npz`` read with ``allow_pickle=False``.
"""

from __future__ import annotations

import base64
import builtins
import json
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import torch

from autoshrink.agent.agent_file import AGENT_STATE_KEY, save_agent
from autoshrink.agent.algorithms import ALGORITHMS, build_agent
from autoshrink.agent.replay_file import load_replay_buffer, save_replay_buffer
from autoshrink.agent.search.loop import run_search
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.compression.errors import CheckpointError
from tests.agent.search.test_search_toy import Interrupt, lines, tiny
from tests.agent.toy_env import ToyCompressionEnv

LEARNING = ["ddpg", "td3", "sac", "ppo"]


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("something tried to unpickle")


class _RefusingUnpickler:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _refuse()


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """pickle/cloudpickle loading raises; torch.load must be called with weights_only=True."""
    real_load = torch.load
    calls: list[dict[str, Any]] = []

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        if kwargs.get("weights_only") is not True:
            raise AssertionError("torch.load without weights_only=True")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pickle, "loads", _refuse)
    monkeypatch.setattr(pickle, "load", _refuse)
    monkeypatch.setattr(pickle, "Unpickler", _RefusingUnpickler)
    monkeypatch.setattr(cloudpickle, "loads", _refuse)
    monkeypatch.setattr(cloudpickle, "load", _refuse)
    monkeypatch.setattr(torch, "load", weights_only_load)
    yield calls


def _search(tmp_path: Path, algorithm: str, episodes: int = 3) -> Path:
    out = tmp_path / "run"
    run_search(ToyCompressionEnv(), tiny(algorithm, episodes=episodes), out)
    return out


def _observations() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (5, 4)).astype(np.float32)


def _rewrite_zip(path: Path, edit: Any) -> None:
    """Rewrite ``path`` with ``edit(data)`` applied to its data JSON (other members kept)."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(members["data"])
    edit(data)
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)


class _Payload:
    """Unpickling this writes ``marker``: proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _serialized(marker: Path) -> dict[str, str]:
    blob = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    return {":type:": "<class 'object'>", ":serialized:": blob}


# --- loading -------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", LEARNING)
def test_agent_zip_loads_without_unpickling(tmp_path, algorithm, no_unpickling):
    out = _search(tmp_path, algorithm)
    with zipfile.ZipFile(out / "agent.zip") as zf:
        data = json.loads(zf.read("data"))
    pickled = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
    assert {"policy_class", "observation_space", "action_space", "lr_schedule"} <= set(pickled)
    assert isinstance(data[AGENT_STATE_KEY], dict)  # our state is plain JSON

    env = ToyCompressionEnv()
    model = ALGORITHMS[algorithm].load(out / "agent.zip", env, tiny(algorithm), env.n_units)
    assert no_unpickling  # the weights came through torch.load(weights_only=True)
    assert model.num_timesteps == 3 * env.n_units
    assert not hasattr(model, AGENT_STATE_KEY)
    actions, _ = model.predict(_observations(), deterministic=True)
    assert actions.shape == (5, 2)


@pytest.mark.parametrize("algorithm", ["ddpg", "sac", "ppo"])
def test_the_loaded_agent_is_the_saved_one(tmp_path, algorithm):
    env = ToyCompressionEnv()
    config = tiny(algorithm, episodes=4)
    live = build_agent(env, config, env.n_units)
    live.learn(total_timesteps=4 * env.n_units)
    save_agent(live, tmp_path / "agent.zip")
    if algorithm == "ddpg":
        save_replay_buffer(live.replay_buffer, tmp_path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pickle, "loads", _refuse)
        mp.setattr(cloudpickle, "loads", _refuse)
        model = ALGORITHMS[algorithm].load(tmp_path / "agent.zip", env, config, env.n_units)
        if algorithm == "ddpg":
            load_replay_buffer(model.replay_buffer, tmp_path)

    obs = _observations()
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], live.predict(obs, deterministic=True)[0]
    )
    for name, tensor in live.policy.state_dict().items():
        assert torch.equal(model.policy.state_dict()[name], tensor), name
    assert (model.num_timesteps, model._episode_num) == (live.num_timesteps, live._episode_num)
    assert list(model.ep_info_buffer) == list(live.ep_info_buffer)
    assert model.action_space == env.action_space
    if algorithm == "ddpg":
        assert model.action_noise.state_dict() == live.action_noise.state_dict()
        assert model.action_noise.mean_fn is not None  # bound to the loaded model
        assert model.replay_buffer.size() == live.replay_buffer.size() == 16
        assert (model.replay_buffer.pos, model.replay_buffer.full) == (16, False)
        for name in ("observations", "next_observations", "actions", "rewards", "dones"):
            assert np.array_equal(
                getattr(model.replay_buffer, name), getattr(live.replay_buffer, name)
            )


# --- resuming ------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["ddpg", "sac", "ppo"])
def test_resume_from_a_checkpoint_without_unpickling(tmp_path, algorithm, no_unpickling):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(ToyCompressionEnv(), tiny(algorithm, episodes=7), out, callbacks=[Interrupt(4)])
    ckpt_dir, _ = RunFolder(out).latest_checkpoint()
    assert not list(out.rglob("*.pkl"))
    if algorithm != "ppo":
        assert (ckpt_dir / "replay_buffer.npz").is_file()
        assert (ckpt_dir / "replay_buffer.json").is_file()

    result = run_search(ToyCompressionEnv(), tiny(algorithm, episodes=7), out, resume=True)
    assert result.episodes == 7
    assert [r["episode"] for r in lines(out)] == list(range(7))
    assert not list(out.rglob("*.pkl"))


def test_resume_restores_noise_and_buffer_without_unpickling(tmp_path, no_unpickling):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(ToyCompressionEnv(), tiny("ddpg", episodes=8), out, callbacks=[Interrupt(5)])
    ckpt_dir, state = RunFolder(out).latest_checkpoint()
    assert state.episodes == 4
    env = ToyCompressionEnv()
    model = ALGORITHMS["ddpg"].load(ckpt_dir / "agent.zip", env, tiny("ddpg"), env.n_units)
    load_replay_buffer(model.replay_buffer, ckpt_dir)
    assert model.num_timesteps == 4 * 4
    assert model.action_noise.episodes == 4
    assert model.replay_buffer.size() == 16


def test_an_old_pickled_replay_buffer_is_refused(tmp_path, no_unpickling):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(ToyCompressionEnv(), tiny("ddpg", episodes=7), out, callbacks=[Interrupt(4)])
    ckpt_dir, _ = RunFolder(out).latest_checkpoint()
    (ckpt_dir / "replay_buffer.npz").unlink()
    (ckpt_dir / "replay_buffer.json").unlink()
    (ckpt_dir / "replay_buffer.pkl").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="never loaded"):
        run_search(ToyCompressionEnv(), tiny("ddpg", episodes=7), out, resume=True)


# --- tampered files ------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["ddpg", "sac", "ppo"])
def test_a_pickle_in_a_known_entry_is_never_run(tmp_path, algorithm):
    out = _search(tmp_path, algorithm)
    marker = tmp_path / "pwned"
    zip_path = out / "agent.zip"

    def poison(data: dict[str, Any]) -> None:
        for key, value in list(data.items()):
            if isinstance(value, dict) and ":serialized:" in value:
                data[key] = _serialized(marker)
        data[AGENT_STATE_KEY] = _serialized(marker)
        data["action_noise"] = _serialized(marker)

    _rewrite_zip(zip_path, poison)
    # The payload is real: an ordinary SB3 load runs it.
    assert not marker.exists()
    with zipfile.ZipFile(zip_path) as zf:
        blob = json.loads(zf.read("data"))["policy_class"][":serialized:"]
    cloudpickle.loads(base64.b64decode(blob))
    assert marker.read_text() == "pwned"
    marker.unlink()

    env = ToyCompressionEnv()
    model = ALGORITHMS[algorithm].load(zip_path, env, tiny(algorithm), env.n_units)
    assert not marker.exists()
    assert model.predict(_observations(), deterministic=True)[0].shape == (5, 2)


def test_a_pickle_in_an_unknown_entry_is_refused(tmp_path):
    out = _search(tmp_path, "ddpg")
    marker = tmp_path / "pwned"
    _rewrite_zip(out / "agent.zip", lambda data: data.update(evil=_serialized(marker)))
    env = ToyCompressionEnv()
    with pytest.raises(CheckpointError, match="'evil'"):
        ALGORITHMS["ddpg"].load(out / "agent.zip", env, tiny("ddpg"), env.n_units)
    assert not marker.exists()


def test_a_tampered_checkpoint_does_not_run_its_payload(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(ToyCompressionEnv(), tiny("ddpg", episodes=7), out, callbacks=[Interrupt(4)])
    ckpt_dir, _ = RunFolder(out).latest_checkpoint()
    marker = tmp_path / "pwned"
    _rewrite_zip(ckpt_dir / "agent.zip", lambda data: data.update(lr_schedule=_serialized(marker)))
    # an object array in the npz is a pickle inside the .npy
    with np.load(ckpt_dir / "replay_buffer.npz") as npz:
        arrays = {name: npz[name] for name in npz.files}
    evil = np.empty(arrays["rewards"].shape, dtype=object)
    evil[0, 0] = _Payload(marker)
    arrays["rewards"] = evil
    with (ckpt_dir / "replay_buffer.npz").open("wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match=r"replay_buffer\.npz"):
        run_search(ToyCompressionEnv(), tiny("ddpg", episodes=7), out, resume=True)
    assert not marker.exists()


def test_odd_weight_file_names_are_refused(tmp_path):
    out = _search(tmp_path, "ddpg")
    tampered = tmp_path / "tampered.zip"
    shutil.copy(out / "agent.zip", tampered)
    with zipfile.ZipFile(tampered, "a") as zf:
        zf.writestr("env.__class__.pth", b"")
    env = ToyCompressionEnv()
    with pytest.raises(CheckpointError, match="unexpected weight files"):
        ALGORITHMS["ddpg"].load(tampered, env, tiny("ddpg"), env.n_units)


def test_an_agent_of_another_shape_is_refused(tmp_path):
    out = _search(tmp_path, "ddpg")

    def reshape(data: dict[str, Any]) -> None:
        data["action_space"]["_shape"] = [3]

    _rewrite_zip(out / "agent.zip", reshape)
    env = ToyCompressionEnv()
    with pytest.raises(CheckpointError, match="action_space shape"):
        ALGORITHMS["ddpg"].load(out / "agent.zip", env, tiny("ddpg"), env.n_units)
