"""``trainer.compile``: the compiled no-gradient forwards compute what eager computes.

One real TorchInductor compile (C++ on this CPU) of the DER profile's IFE network, driven
through ``RainbowTask.loss`` and the actor, against an eager twin with the same weights and
noise: the loss, the new priorities, the mask and the spectral-norm vectors (a side effect of
every training-mode forward) agree to float rounding. The refusals run no compile at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, tracking_args
from ife_platform.tasks.rainbow import RainbowTask
from mlflow.tracking import MlflowClient
from tensordict import TensorDict

from ife_platform import compiled
from ife_platform.cli import main
from ife_platform.config import ConfigError, compose
from ife_platform.experiment import check_compile


def _task(compile: bool) -> RainbowTask:
    cfg = compose(
        [
            "agent=rainbow_der",
            "env=atari100k",
            "env.game=pong",
            "model.extractor=ife",
            "model.width=1",
            f"trainer.compile={str(compile).lower()}",
        ]
    )
    return RainbowTask(cfg)


def _batch(n: int = 4) -> TensorDict:
    g = torch.Generator().manual_seed(1)
    return TensorDict(
        {
            "obs": torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g),
            "next_obs": torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g),
            "action": torch.arange(n) % 6,
            "reward": torch.tensor([1.0, 0.0, -1.0, 0.0])[:n],
            "discount": torch.tensor([0.9, 0.0, 0.9, 0.5])[:n],
            "priority_weight": torch.ones(n),
        },
        batch_size=[n],
    )


def _power_iteration_vectors(task: RainbowTask) -> dict[str, torch.Tensor]:
    return {
        f"{net}.{k}": v.clone()
        for net in ("online", "target")
        for k, v in getattr(task, net).state_dict().items()
        if k.endswith("._u") or k.endswith("._v")
    }


@pytest.mark.slow
def test_compiled_target_and_acting_forwards_match_eager() -> None:
    eager, fast = _task(False), _task(True)
    fast.load_state_dict(eager.state_dict())
    assert fast.actor.forward is fast.no_grad_forward  # the actor and the targets share it
    assert eager.no_grad_forward is compiled.no_grad_forward(False)
    batch = _batch(1)  # the actor's shape too: two graphs in all (online, target)
    start = _power_iteration_vectors(fast)
    terms = {}
    for name, task in (("eager", eager), ("compiled", fast)):
        torch.manual_seed(0)  # the same noise draws for both
        terms[name] = task.loss(batch)
    for key in ("loss", "td_error", "q_mean", "mask_entropy"):
        torch.testing.assert_close(
            terms["compiled"][key], terms["eager"][key], rtol=1e-4, atol=1e-5, msg=key
        )
    # side effects of the compiled training-mode forwards: power iteration, mask of the last pass
    u_eager, u_fast = _power_iteration_vectors(eager), _power_iteration_vectors(fast)
    assert u_eager and u_eager.keys() == u_fast.keys()
    for k in u_eager:
        torch.testing.assert_close(u_fast[k], u_eager[k], rtol=1e-4, atol=1e-5, msg=k)
    # the target net ran only through the compiled function, and its vectors moved
    moved = [k for k in u_fast if k.startswith("target.") and not torch.equal(u_fast[k], start[k])]
    assert moved, "the compiled target forward did not run the power iteration"
    # gradients flow through the eager forward only, and reach the network
    terms["compiled"]["loss"].backward()
    assert all(p.grad is not None for p in fast.online.parameters() if p.requires_grad)
    assert all(p.grad is None for p in fast.target.parameters())

    # acting: the same Q values (fresh noise from the same seed), so the same greedy actions
    pixels = batch["obs"][:1]
    q, masks = {}, {}
    for name, task in (("eager", eager), ("compiled", fast)):
        torch.manual_seed(3)
        task.online.reset_noise()
        with torch.no_grad():
            out = task.actor.forward(task.online, pixels)
        q[name] = task.online.expected_q(out)
        masks[name] = task.online.attention_mask
        assert masks[name] is not None and masks[name].shape == (1, 14, 14)
    torch.testing.assert_close(q["compiled"], q["eager"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(masks["compiled"], masks["eager"], rtol=1e-4, atol=1e-6)


def test_compile_is_a_rainbow_key() -> None:
    with pytest.raises(ConfigError, match="trainer.compile.*rainbow"):
        compose(["agent=a3c_lstm", "trainer.compile=true"])


def test_compile_without_a_compiler_is_refused_before_the_run(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    reason = compiled.compile_unavailable("cpu")
    assert reason is not None and "C++ compiler" in reason and "g++" in reason
    monkeypatch.setattr(compiled.importlib.util, "find_spec", lambda name: None)
    assert "Triton" in (compiled.compile_unavailable("gpu") or "")
    check_compile(compose(["trainer.compile=false"]))  # off: nothing to check
    with pytest.raises(ConfigError, match="no C\\+\\+ compiler"):
        check_compile(compose(["trainer.compile=true", "trainer.accelerator=cpu"]))
    args = ["train", *TINY, *tracking_args(workdir), "trainer.compile=true"]
    assert main([*args, "trainer.accelerator=cpu"]) == 2
    assert "no C++ compiler" in capsys.readouterr().err
    # refused before a run was opened: the store holds no run
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    assert all(not client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_compile_without_python_headers_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(compiled.sysconfig, "get_paths", lambda: {"include": str(tmp_path)})
    reason = compiled.compile_unavailable("cpu")
    assert reason is not None and "Python.h" in reason and str(tmp_path) in reason
    (tmp_path / "Python.h").write_text("")
    assert compiled.compile_unavailable("cpu") is None  # (this machine has a compiler)


def test_cxx_names_the_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXX", "my-cxx")
    seen: list[str] = []
    monkeypatch.setattr(compiled.shutil, "which", lambda name: seen.append(name))
    reason = compiled.compile_unavailable("cpu")
    assert seen == ["my-cxx"] and reason is not None and "my-cxx" in reason
    assert "mps" in (compiled.compile_unavailable("mps") or "")


def test_each_compiled_forward_has_its_own_code_object() -> None:
    """Dynamo caches graphs per code object, at most 8, each pinned to one module: a shared
    code object would run eager from the fifth task of a process on (two nets per task)."""
    f, g = compiled.no_grad_forward(True), compiled.no_grad_forward(True)
    code_f = f._torchdynamo_orig_callable.__code__
    code_g = g._torchdynamo_orig_callable.__code__
    assert code_f is not code_g and code_f is not compiled._call.__code__
    assert code_f.co_code == compiled._call.__code__.co_code  # the same function
