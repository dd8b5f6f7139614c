"""``ife sweep``: one base experiment expanded over axes into trials, run and tracked.

A sweep is the base experiment's words (presets, YAML files, ``key=value``) plus axes
(``sweep.grid.KEY=[v1, v2]``, or a ``sweep.grid`` mapping in a YAML file / a preset under
``configs/sweep/``). Its trials are the Cartesian product of the axes, in the order the axes
were given. Every trial's config is composed and validated before the first trial starts.

In MLflow a sweep is one parent run (tag ``ife.kind=sweep``, the plan as ``sweep.json``)
with one child run per trial (tags ``ife.sweep.trial`` and ``ife.sweep.id``); an
``ife continual`` trial's sequence run is that child and nests its own task runs.

Each trial runs as its own process (``python -m ife_platform.cli train|continual ...``), so
a crash loses only that trial: it is marked FAILED with its log as an artifact and the
others go on. ``resume=SWEEP_RUN_ID`` skips finished trials, continues killed ones from
their checkpoint (``resume=TRIAL_RUN``) and reruns failed ones from scratch.

Backends: ``local`` (a pool of trial processes sized to this machine, each with its share
of the cores as torch threads) and ``ray`` (Ray tasks with per-trial CPU/GPU resources on an
existing cluster or a local instance; a trial that uses several GPUs is still one Lightning
DDP run inside its task). See ``docs/sweep.md``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ife_platform.config import ConfigError, available_presets, compose, configs_root
from ife_platform.experiment import SWEEP_TAG_PREFIX

__all__ = [
    "EXIT_INCOMPLETE",
    "EXIT_TRIALS_FAILED",
    "SweepPlan",
    "SweepResult",
    "Trial",
    "excluded",
    "expand_grid",
    "flatten_exclusions",
    "flatten_grid",
    "format_value",
    "plan_sweep",
    "run_sweep",
    "sweep_words",
    "trial_runs",
]

#: ``ife sweep`` exits with ``EXIT_TRIALS_FAILED + N`` (at most 127) when N trials failed.
EXIT_TRIALS_FAILED = 100
#: ``ife sweep`` exits with 3 when no trial failed but some still run in another process.
EXIT_INCOMPLETE = 3

KIND_TAG = "ife.kind"
TRIAL_TAG = f"{SWEEP_TAG_PREFIX}trial"
SWEEP_TAG = f"{SWEEP_TAG_PREFIX}id"
PLAN_ARTIFACT = "sweep.json"


# --------------------------------------------------------------------------------------------
# Expansion (pure)
# --------------------------------------------------------------------------------------------


def flatten_grid(grid: Mapping[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """The axes of a ``sweep.grid`` mapping, by dotted key.

    ``{"env": {"game": ["pong", "boxing"]}, "seed": [0, 1]}`` and
    ``{"env.game": ["pong", "boxing"], "seed": [0, 1]}`` both give
    ``{"env.game": ["pong", "boxing"], "seed": [0, 1]}``.

    Raises:
        ConfigError: an axis that is not a non-empty list.
    """
    axes: dict[str, list[Any]] = {}
    for key, value in grid.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping | DictConfig):
            axes.update(flatten_grid(value, path + "."))
            continue
        values = OmegaConf.to_container(value) if OmegaConf.is_list(value) else value
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"sweep.grid.{path} must be a non-empty list of values, got {value!r} "
                f"(write sweep.grid.{path}=[v1,v2])"
            )
        axes[path] = list(values)
    return axes


def flatten_exclusions(exclude: Sequence[Any], axes: Mapping[str, Sequence[Any]]) -> list[dict]:
    """``sweep.exclude`` entries as ``{dotted axis key: value}`` mappings, checked.

    An entry is nested (``{env: {game: pong}}``) or dotted (``{env.game: pong}``), as the grid.

    Raises:
        ConfigError: an entry that is not a non-empty mapping, a key that is not an axis, or
            a value that is not one of that axis's values.
    """

    def flat(entry: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, Mapping | DictConfig):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    rules = []
    for i, entry in enumerate(exclude):
        if not isinstance(entry, Mapping | DictConfig) or not entry:
            raise ConfigError(
                f"sweep.exclude[{i}] must map axis keys to values, e.g. "
                f"{{env.game: pong, seed: 0}}; got {entry!r}"
            )
        rule = flat(entry)
        for key, value in rule.items():
            if value is None and ":" in key:
                raise ConfigError(
                    f"sweep.exclude[{i}]: '{key}' reads as a key without a value: write "
                    f"{{{key.replace(':', ': ', 1)}}} (a space after the colon, quoted in a shell)"
                )
            if key not in axes:
                raise ConfigError(
                    f"sweep.exclude[{i}]: {key} is not an axis of the grid "
                    f"(axes: {', '.join(axes) or 'none'})"
                )
            if value not in axes[key]:
                raise ConfigError(
                    f"sweep.exclude[{i}]: {key}={format_value(value)} is not on its axis "
                    f"{[format_value(v) for v in axes[key]]}"
                )
        rules.append(rule)
    return rules


def excluded(values: Mapping[str, Any], rules: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a grid point matches every key of one of the exclusion ``rules``."""
    return any(all(values[k] == v for k, v in rule.items()) for rule in rules)


def expand_grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of the axes, the first axis varying slowest.

    ``{"a": [1, 2], "b": ["x", "y"]}`` -> ``[{a: 1, b: x}, {a: 1, b: y}, {a: 2, b: x},
    {a: 2, b: y}]``; no axes -> one trial with no values.
    """
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes.values())]


def format_value(value: Any) -> str:
    """A value as the text of a ``key=value`` word that :func:`compose` parses back."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        try:  # a string that YAML would read as another type (or not at all) gets quotes
            back = OmegaConf.create(f"v: {value}")["v"] if value else None
        except Exception:
            back = None
        return value if back == value else json.dumps(value)
    return json.dumps(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def _trial_name(values: Mapping[str, Any]) -> str:
    if not values:
        return "base"
    return "-".join(f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in values.items())


@dataclass
class Trial:
    """One point of the grid.

    Attributes:
        index: position in the expansion (the ``ife.sweep.trial`` tag).
        name: ``game=pong-seed=0``: the axis values, for run names and tables.
        values: the axis values by dotted key.
        words: the config words that set them (``env.game=pong``, ``agent=a3c_lstm``).
        family: the trial's agent family (``rainbow`` or ``actor_critic``).
    """

    index: int
    name: str
    values: dict[str, Any]
    words: list[str]
    family: str = "rainbow"


@dataclass
class SweepPlan:
    """What a sweep runs: the same for a fresh sweep and its resumption (``sweep.json``).

    Attributes:
        name: ``sweep.name``.
        command: ``train`` or ``continual``.
        base: the base experiment's words without the ``sweep.*`` and ``resume`` ones.
        trials: the expanded grid.
        explain: run ``ife explain`` on every finished trial.
    """

    name: str
    command: str
    base: list[str]
    trials: list[Trial]
    explain: bool = False

    def to_json(self) -> str:
        """The plan as JSON (logged to the parent run)."""
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> SweepPlan:
        """Read a plan written by :meth:`to_json`."""
        data = json.loads(text)
        data["trials"] = [Trial(**t) for t in data["trials"]]
        return cls(**data)


def sweep_words(args: Sequence[str]) -> list[str]:
    """``ife sweep`` words with sweep preset names (``configs/sweep/NAME.yaml``) as paths."""
    presets = available_presets("sweep")
    out = []
    for word in args:
        if "=" not in word and word in presets:
            word = str(configs_root() / "sweep" / f"{word}.yaml")
        out.append(word)
    return out


def _is_sweep_word(word: str) -> bool:
    key = word.partition("=")[0].strip()
    return "=" in word and (key in ("sweep", "resume") or key.startswith("sweep."))


def _compose_trial(command: str, words: list[str]) -> DictConfig:
    if command == "continual":
        from ife_platform.sequences import continual_words

        return compose(continual_words(words))
    return compose(words)


def plan_sweep(args: Sequence[str]) -> tuple[DictConfig, SweepPlan]:
    """Compose ``ife sweep`` words into the sweep's config and its plan of trials.

    Every trial's config is composed and validated here, before anything runs.

    Raises:
        ConfigError: a bad key or value in the base, an axis or any trial.
    """
    from ife_platform.config import agent_spec

    words = sweep_words(args)
    cfg = compose(words)
    s = cfg.sweep
    axes = flatten_grid(s.grid)
    for key in axes:
        if key == "resume" or key.startswith(("sweep.", "tracking.parent_run", "tracking.tags")):
            raise ConfigError(f"sweep.grid.{key}: {key} cannot be an axis of a sweep")
    base = [w for w in words if not _is_sweep_word(w)]
    # sweep keys set in a YAML file stay in the file: trials ignore them (not logged either)
    rules = flatten_exclusions(OmegaConf.to_container(s.exclude), axes)
    trials = []
    for index, values in enumerate(expand_grid(axes)):
        if excluded(values, rules):  # (indices stay the grid's: a trial keeps its number)
            continue
        trial_words = [f"{k}={format_value(v)}" for k, v in values.items()]
        try:
            trial_cfg = _compose_trial(s.command, [*base, *trial_words])
        except ConfigError as err:
            raise ConfigError(f"sweep trial {index} ({_trial_name(values)}): {err}") from err
        family = agent_spec(trial_cfg.agent.name).family
        trials.append(Trial(index, _trial_name(values), dict(values), trial_words, family))
    if not trials:
        raise ConfigError("sweep.exclude leaves out every trial of the grid: nothing to run")
    plan = SweepPlan(s.name, s.command, base, trials, bool(s.explain))
    return cfg, plan


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------


def machine_cores() -> int:
    """Cores this process may use (the affinity mask, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def local_slots(cores: int, workers: int, cpus_per_trial: int) -> tuple[int, int]:
    """``(trials at once, threads per trial)`` of the local backend.

    ``workers=0`` sizes the pool to the machine: one trial per 2 cores (at least one), or
    ``cores // cpus_per_trial`` when that is set; threads default to an even share.
    Examples: 2 cores -> (1, 2); 16 cores -> (8, 2); 16 cores, workers=3 -> (3, 5).
    """
    if workers <= 0:
        workers = max(1, cores // cpus_per_trial) if cpus_per_trial > 0 else max(1, cores // 2)
    threads = cpus_per_trial if cpus_per_trial > 0 else max(1, cores // workers)
    return workers, threads


def gpu_slot(slot: int, gpus_per_trial: float, gpus: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` of local worker slot ``slot`` (None: leave it as it is).

    With whole GPUs per trial, slot ``s`` gets devices ``[s*g, (s+1)*g)`` modulo the devices
    present (``gpus_per_trial=2`` on 4 GPUs: slot 0 -> "0,1", slot 1 -> "2,3", slot 2 ->
    "0,1"). Fractions share one device per slot round-robin. No GPUs or 0 per trial: None.
    """
    if gpus <= 0 or gpus_per_trial <= 0:
        return None
    per = max(1, int(gpus_per_trial))
    first = (slot * per) % gpus
    return ",".join(str((first + i) % gpus) for i in range(min(per, gpus)))


# --------------------------------------------------------------------------------------------
# Running one job (a trial's train/continual command, or its explain command)
# --------------------------------------------------------------------------------------------


def job_command(command: str, words: Sequence[str]) -> list[str]:
    """The trial process's command line: this interpreter running the ``ife`` CLI."""
    return [sys.executable, "-m", "ife_platform.cli", command, *words]


def run_job(
    cmd: Sequence[str],
    log_path: str,
    env: Mapping[str, str] | None = None,
    started: Callable[[subprocess.Popen], None] | None = None,
) -> int:
    """Run one trial command, its output appended to ``log_path``; return its exit code.

    A ``KeyboardInterrupt`` here (Ray cancels a task that way) stops the trial with SIGTERM,
    which checkpoints it, and waits for it.
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # a Ctrl-C reaches the sweep, which stops trials cleanly
        )
        if started is not None:
            started(proc)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGTERM)
            return proc.wait()


def _ray_job(cmd: list[str], log_path: str, env: dict[str, str]) -> tuple[int, str]:
    """Body of the Ray task: run the job where Ray put it; return exit code and log text."""
    rc = run_job(cmd, log_path, env)
    text = Path(log_path).read_text(errors="replace")
    return rc, text[-2_000_000:]


# --------------------------------------------------------------------------------------------
# Backends: start jobs, report the ones that ended
# --------------------------------------------------------------------------------------------


class LocalBackend:
    """A pool of trial processes on this machine (one thread waits on each)."""

    def __init__(self, workers: int, gpus_per_trial: float) -> None:
        self.capacity = workers
        self.gpus_per_trial = gpus_per_trial
        self._gpus = _cuda_devices() if gpus_per_trial > 0 else 0
        self._free = list(range(workers))
        self._done: list[tuple[Any, int]] = []
        self._procs: dict[Any, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def start(self, key: Any, cmd: list[str], log_path: str, env: dict[str, str]) -> None:
        """Start one job in a free slot."""
        slot = self._free.pop(0)
        env = dict(env)
        devices = gpu_slot(slot, self.gpus_per_trial, self._gpus)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices

        def started(proc: subprocess.Popen) -> None:
            with self._lock:
                self._procs[key] = proc

        def body() -> None:
            try:
                rc = run_job(cmd, log_path, env, started)
            except Exception as err:  # could not even start: a failed job, with the reason
                with open(log_path, "a") as log:
                    log.write(f"could not start the trial: {err}\n")
                rc = 1
            with self._lock:
                self._procs.pop(key, None)
                self._done.append((key, rc))
                self._free.append(slot)

        threading.Thread(target=body, daemon=True).start()

    def free(self) -> int:
        """Jobs that may start now."""
        with self._lock:
            return len(self._free)

    def finished(self) -> list[tuple[Any, int, str | None]]:
        """Jobs that ended since the last call: ``(key, exit code, None)`` (logs are local)."""
        with self._lock:
            done, self._done = self._done, []
        return [(key, rc, None) for key, rc in done]

    def stop(self) -> None:
        """SIGTERM every running trial (each checkpoints and exits)."""
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Nothing to release."""


def _cuda_devices() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover (torch is a dependency)
        return 0


def check_ray_address(address: str | None, timeout_s: float = 3.0) -> None:
    """Refuse a ``HOST:PORT`` / ``ray://HOST:PORT`` where nothing listens, in seconds.

    (Ray itself retries such an address for minutes.) ``None`` and ``auto`` pass: Ray starts
    or finds the cluster itself.

    Raises:
        ConfigError: the address is malformed or nothing accepts a connection there.
    """
    if address is None or address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"sweep.address={address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise ConfigError(
            f"sweep.address={address}: no Ray cluster answers there ({err}); start one with "
            "`ray start --head` or leave sweep.address unset for a local instance"
        ) from err


class RayBackend:
    """Trials as Ray tasks with ``num_cpus`` / ``num_gpus`` each, on a cluster or locally.

    ``address``: None starts a local Ray instance for this sweep; ``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT`` joins an existing cluster. Every node needs this package installed
    at the same interpreter path, and the tracking store must be reachable from every node
    (an MLflow server, not a local SQLite file, for a multi-node cluster).
    """

    def __init__(self, address: str | None, workers: int, cpus: int, gpus: float) -> None:
        try:
            import ray
        except ImportError as err:
            raise ConfigError(
                "sweep.backend=ray needs Ray: pip install -e '.[ray]' (or pip install ray)"
            ) from err
        self._ray = ray
        check_ray_address(address)
        try:
            if address is None:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
        except Exception as err:
            raise ConfigError(f"sweep.address={address}: cannot connect to Ray: {err}") from err
        self._task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_ray_job)
        self.capacity = workers if workers > 0 else 1_000_000
        self._refs: dict[Any, Any] = {}

    def start(self, key: Any, cmd: list[str], log_path: str, env: dict[str, str]) -> None:
        """Submit one job; Ray runs it when its resources are free."""
        self._refs[key] = self._task.remote(cmd, log_path, env)

    def free(self) -> int:
        """Jobs that may be submitted now."""
        return self.capacity - len(self._refs)

    def finished(self) -> list[tuple[Any, int, str | None]]:
        """Jobs that ended: ``(key, exit code, log text)``."""
        if not self._refs:
            return []
        ready, _ = self._ray.wait(list(self._refs.values()), num_returns=len(self._refs), timeout=0)
        out = []
        for key, ref in list(self._refs.items()):
            if ref not in ready:
                continue
            del self._refs[key]
            try:
                rc, text = self._ray.get(ref)
            except Exception as err:  # the task itself died (node lost, cancelled)
                rc, text = 1, f"the Ray task failed: {err}\n"
            out.append((key, rc, text))
        return out

    def stop(self) -> None:
        """Cancel the running tasks (each stops its trial with SIGTERM)."""
        for ref in self._refs.values():
            self._ray.cancel(ref)

    def close(self) -> None:
        """Disconnect (and shut down a Ray instance this sweep started)."""
        self._ray.shutdown()


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


@dataclass
class TrialState:
    """Where one trial stands in this sweep process."""

    trial: Trial
    status: str = "pending"  # pending | running | explaining | finished | failed | stopped
    run_id: str | None = None
    action: str = "train"  # train | resume | explain | skip
    started: float | None = None
    seconds: float | None = None
    note: str = ""


@dataclass
class SweepResult:
    """What :func:`run_sweep` left: the parent run and every trial's end."""

    run_id: str
    tracking_uri: str
    states: list[TrialState] = field(default_factory=list)
    stopped_by: int | None = None

    @property
    def failed(self) -> int:
        """Trials that failed."""
        return sum(s.status == "failed" for s in self.states)

    @property
    def incomplete(self) -> int:
        """Trials neither finished nor failed (still running elsewhere, or stopped)."""
        return sum(s.status not in ("finished", "failed") for s in self.states)

    @property
    def exit_code(self) -> int:
        """The exit code of ``ife sweep``.

        0: every trial finished; ``128 + N``: stopped by signal N; 100 + the failed trials
        (at most 127); :data:`EXIT_INCOMPLETE` when some trials still run elsewhere.
        """
        if self.stopped_by is not None:
            return 128 + self.stopped_by
        if self.failed:
            return min(127, EXIT_TRIALS_FAILED + self.failed)
        return EXIT_INCOMPLETE if self.incomplete else 0


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def status_table(states: Sequence[TrialState], workers: int, now: float) -> str:
    """The live table: counts, ETA, and one line per running or failed trial."""
    count = {k: sum(s.status == k for s in states) for k in ("finished", "failed", "pending")}
    running = [s for s in states if s.status in ("running", "explaining")]
    done_times = [s.seconds for s in states if s.status == "finished" and s.seconds]
    if done_times:
        mean = sum(done_times) / len(done_times)
        left = count["pending"] + len(running)
        eta = _fmt_seconds(mean * left / max(1, min(workers, left or 1)))
    else:
        eta = "unknown (no trial finished yet)"
    lines = [
        f"trials: {count['finished']} finished, {len(running)} running, {count['failed']} "
        f"failed, {count['pending']} pending of {len(states)}; ETA {eta}"
    ]
    for s in running:
        elapsed = _fmt_seconds(now - s.started) if s.started else "-"
        what = "explain" if s.status == "explaining" else s.action
        lines.append(f"  running  #{s.trial.index:<3} {s.trial.name}  ({what}, {elapsed})")
    for s in states:
        if s.status == "failed":
            lines.append(f"  FAILED   #{s.trial.index:<3} {s.trial.name}  {s.note}")
    return "\n".join(lines)


def trial_runs(client: Any, exp_id: str, parent: str, index: int | None = None) -> list[Any]:
    """Every trial run of the sweep ``parent`` (all attempts), oldest first.

    With ``index``, only that trial's attempts. Searched in every experiment of the store
    (``exp_id`` first): a grid over ``tracking.experiment`` puts trials in other experiments
    than the sweep's own.
    """
    others = [e.experiment_id for e in client.search_experiments()]
    query = f"tags.{SWEEP_TAG} = '{parent}'"
    if index is not None:
        query += f" and tags.{TRIAL_TAG} = '{index}'"
    return client.search_runs(
        [exp_id, *[e for e in others if e != exp_id]],
        filter_string=query,
        order_by=["attributes.start_time ASC"],
        max_results=50_000,
    )


def _latest_trial_runs(client: Any, exp_id: str, parent: str) -> dict[int, Any]:
    """The newest child run of each trial index of a sweep."""
    latest: dict[int, Any] = {}
    for run in trial_runs(client, exp_id, parent):
        index = run.data.tags.get(TRIAL_TAG)
        if index is not None and index.isdigit():
            latest[int(index)] = run
    return latest


def _action(run: Any, explain: bool) -> str:
    """What a resumed sweep does with a trial whose newest run is ``run``.

    ``wait`` for a run that is still RUNNING (its process is alive, or on another host): a
    trial orphaned by a sweep killed with -9 goes on by itself and is not started twice.
    (Runs of dead processes on this host were set to KILLED before: ``reap_dead_runs``.)
    """
    if run is None:
        return "train"
    status = run.info.status
    if status in ("RUNNING", "SCHEDULED"):
        return "wait"
    if status == "FINISHED":
        if explain and not any(k.startswith("explain/") for k in run.data.metrics):
            return "explain"
        return "skip"
    if status == "KILLED":
        return "resume"  # stopped by a signal: it checkpointed, continue it
    return "train"  # FAILED (or lost while running): from scratch, as a new run


def _open_parent(
    client: Any, cfg: DictConfig, plan: SweepPlan, uri: str, words: Sequence[str]
) -> str:
    from ife_platform.runs import PROCESS_TAG, current_process
    from ife_platform.tracking import ensure_experiment, log_environment

    exp_id = ensure_experiment(client, cfg.tracking.experiment)
    parent = client.create_run(
        exp_id,
        run_name=plan.name,
        tags={KIND_TAG: "sweep", PROCESS_TAG: current_process().tag()},
    ).info.run_id
    params = {
        "sweep.command": plan.command,
        "sweep.trials": len(plan.trials),
        "sweep.base": " ".join(plan.base)[:6000],
        "sweep.backend": cfg.sweep.backend,
        "sweep.explain": plan.explain,
    }
    for key, values in flatten_grid(cfg.sweep.grid).items():
        params[f"sweep.grid.{key}"] = json.dumps(values)[:6000]
    for key, value in params.items():
        client.log_param(parent, key, value)
    client.log_text(parent, plan.to_json(), PLAN_ARTIFACT)
    client.log_text(parent, " ".join(["ife", "sweep", *words]) + "\n", "command.txt")
    log_environment(run_id=parent, client=client)
    return parent


#: Words that say where a sweep is stored, not what it computes.
_STORE_KEYS = ("tracking.uri", "tracking.output_dir", "tracking.experiment")


def _identity(words: Sequence[str]) -> list[str]:
    return [w for w in words if w.partition("=")[0].strip() not in _STORE_KEYS]


def _reopen_parent(client: Any, parent: str, plan: SweepPlan) -> SweepPlan:
    from ife_platform.runs import PROCESS_TAG, ProcessId, current_process, is_alive

    try:
        run = client.get_run(parent)
    except Exception as err:
        raise ConfigError(f"resume={parent}: no such run in the tracking store") from err
    if run.data.tags.get(KIND_TAG) != "sweep":
        raise ConfigError(f"resume={parent}: run {parent} is not a sweep (no ife.kind=sweep tag)")
    owner = ProcessId.parse(run.data.tags.get(PROCESS_TAG, ""))
    if run.info.status == "RUNNING" and owner is not None and is_alive(owner):
        raise ConfigError(f"resume={parent}: the sweep is running now in process {owner.pid}")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        saved = SweepPlan.from_json(
            Path(client.download_artifacts(parent, PLAN_ARTIFACT, tmp)).read_text()
        )
    given, axes = _identity(plan.base), [t.words for t in plan.trials]
    # `ife sweep resume=ID` (with at most the store's keys) resumes the saved plan; a command
    # that describes a sweep must describe this one
    if (given or any(axes)) and (
        given != _identity(saved.base) or axes != [t.words for t in saved.trials]
    ):
        raise ConfigError(
            f"resume={parent}: that sweep ran base {saved.base} over "
            f"{len(saved.trials)} trials; this command describes another sweep. Resume it "
            "with `ife sweep resume=ID` (scheduling keys such as sweep.workers may change)"
        )
    client.update_run(parent, status="RUNNING")
    client.set_tag(parent, PROCESS_TAG, current_process().tag())
    return saved


def run_sweep(
    args: Sequence[str],
    *,
    print_fn: Callable[[str], None] = print,
    poll_s: float = 1.0,
    table_every_s: float = 60.0,
) -> SweepResult:
    """``ife sweep``: plan, open (or resume) the parent run, run every trial, report.

    Raises:
        ConfigError, TrackingUnreachableError: before any trial starts.
    """
    import mlflow

    from ife_platform.runs import reap_dead_runs
    from ife_platform.tracking import ensure_experiment, open_tracking_store, retry_if_locked

    words = sweep_words(args)
    cfg, plan = plan_sweep(words)
    uri = open_tracking_store(cfg.tracking.uri)
    client = mlflow.MlflowClient(uri)
    retry_if_locked(lambda: reap_dead_runs(client))
    s = cfg.sweep
    exp_id = ensure_experiment(client, cfg.tracking.experiment)
    # the backend first: a Ray cluster that does not answer fails before any run is opened
    if s.backend == "ray":
        cpus = s.cpus_per_trial or 2
        workers, threads = (s.workers, cpus)
        backend: Any = RayBackend(s.address, s.workers, cpus, float(s.gpus_per_trial))
    else:
        workers, threads = local_slots(machine_cores(), s.workers, s.cpus_per_trial)
        backend = LocalBackend(workers, float(s.gpus_per_trial))
    # Ray reserves CPUs per trial, so its trials keep exactly those; local trials share the
    # machine with whatever else trains on it unless sweep.cpus_per_trial fixes their threads.
    pinned = s.backend == "ray" or s.cpus_per_trial > 0
    try:
        if cfg.resume:
            parent = cfg.resume
            plan = _reopen_parent(client, parent, plan)
            latest = _latest_trial_runs(client, exp_id, parent)
        else:
            parent = _open_parent(client, cfg, plan, uri, words)
            latest = {}
    except BaseException:
        backend.close()
        raise
    out = Path(cfg.tracking.output_dir).resolve() / parent
    states = []
    for trial in plan.trials:
        run = latest.get(trial.index)
        state = TrialState(trial, run_id=run.info.run_id if run is not None else None)
        state.action = _action(run, plan.explain)
        if state.action == "skip":
            state.status = "finished"
            state.note = "finished before"
        elif state.action == "wait":
            state.status = "stopped"
            state.note = "its run is still RUNNING elsewhere: resume the sweep when it ends"
        states.append(state)
    result = SweepResult(parent, uri, states)
    by_index = {st.trial.index: st for st in states}  # (excluded points leave gaps)
    todo = [st for st in states if st.status == "pending"]
    print_fn(
        f"sweep {plan.name}: {len(states)} trials ({len(states) - len(todo)} finished before), "
        f"backend {s.backend}, {workers or 'unbounded'} at once, "
        f"{f'{threads} threads each' if pinned else 'each its share of the cores'}; "
        f"parent run {parent} in {uri}"
    )

    def trial_words(st: TrialState) -> list[str]:
        tags = json.dumps({TRIAL_TAG: str(st.trial.index), SWEEP_TAG: parent})
        extra = [
            f"tracking.uri={uri}",
            f"tracking.output_dir={Path(cfg.tracking.output_dir).resolve()}",
            f"tracking.parent_run={parent}",
            f"tracking.tags={tags}",
            f"tracking.run_name={plan.name}/{st.trial.name}",
        ]
        if st.trial.family == "rainbow":
            # (0: the trial takes its share through the machine's registry of training
            # processes, ife_platform/threads.py, so it also gives way to runs outside the
            # sweep and takes the cores back when fewer trials are left)
            extra.append(f"trainer.threads={threads if pinned else 0}")
        if st.action == "resume" and st.run_id:
            extra.append(f"resume={st.run_id}")
        return [*plan.base, *st.trial.words, *extra]

    def launch(st: TrialState) -> None:
        log_path = str(out / "trials" / f"{st.trial.index:04d}.log")
        env = {"OMP_NUM_THREADS": str(threads)} if pinned else {}
        if st.action == "explain":
            st.status = "explaining"
            out_dir = Path(cfg.tracking.output_dir).resolve()
            cmd = job_command(
                "explain", [str(st.run_id), f"tracking.uri={uri}", f"tracking.output_dir={out_dir}"]
            )
        else:
            st.status = "running"
            cmd = job_command(plan.command, trial_words(st))
        st.started = st.started or time.time()
        backend.start(st.trial.index, cmd, log_path, env)

    stop = {"signum": None}

    def on_signal(signum: int, frame: Any) -> None:
        if stop["signum"] is None:
            stop["signum"] = signum
            print_fn(f"sweep: signal {signum}: stopping the running trials (they checkpoint)")
            backend.stop()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            previous[sig] = signal.signal(sig, on_signal)
    last_table = 0.0
    try:
        pending = list(todo)
        while True:
            changed = False
            for key, rc, text in backend.finished():
                st = by_index[key]
                changed = True
                _end_job(client, exp_id, parent, plan, st, rc, text, out, stop["signum"])
                if st.status == "pending":  # trained; its explain job comes next
                    pending.insert(0, st)
                said = "trained; ife explain next" if st.status == "pending" else st.status
                print_fn(f"trial #{st.trial.index} {st.trial.name}: {said} {st.note}".rstrip())
            while pending and backend.free() > 0 and stop["signum"] is None:
                launch(pending.pop(0))
                changed = True
            running = any(st.status in ("running", "explaining") for st in states)
            now = time.time()
            if changed or now - last_table >= table_every_s:
                if running or pending:
                    print_fn(status_table(states, workers or len(states), now))
                last_table = now
            if not running and (not pending or stop["signum"] is not None):
                break
            time.sleep(poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        backend.close()
    result.stopped_by = stop["signum"]
    for st in states:
        if st.status == "pending" and stop["signum"] is not None:
            st.status = "stopped"
    _close_parent(client, parent, result)
    print_fn(final_table(states))
    return result


def _end_job(
    client: Any,
    exp_id: str,
    parent: str,
    plan: SweepPlan,
    st: TrialState,
    rc: int,
    text: str | None,
    out: Path,
    signum: int | None,
) -> None:
    """Record one ended job: its run, status and log (an artifact of the trial's run)."""
    from ife_platform.tracking import retry_if_locked

    log_path = out / "trials" / f"{st.trial.index:04d}.log"
    if text is not None:  # a Ray job: its log came back as text
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(text)
    was_explain = st.status == "explaining"
    attempts = trial_runs(client, exp_id, parent, st.trial.index)  # (this trial's alone)
    run = attempts[-1] if attempts else None
    if run is not None:
        st.run_id = run.info.run_id
    st.seconds = time.time() - (st.started or time.time())
    if was_explain:
        st.status, st.note = ("finished", "") if rc == 0 else ("failed", f"explain exit {rc}")
    elif rc == 0 and run is not None and run.info.status == "FINISHED":
        if plan.explain:
            st.status, st.action = "pending", "explain"
        else:
            st.status, st.note = "finished", ""
    elif signum is not None or rc in (128 + signal.SIGTERM, 128 + signal.SIGINT, -15, -2):
        st.status, st.note = "stopped", "stopped by a signal (resume the sweep to continue it)"
    else:
        st.status, st.note = "failed", f"exit code {rc}"
        if run is None:  # it died before it could open its run: record one for it
            run = client.create_run(
                exp_id,
                run_name=f"{plan.name}/{st.trial.name}",
                tags={
                    "mlflow.parentRunId": parent,
                    TRIAL_TAG: str(st.trial.index),
                    SWEEP_TAG: parent,
                },
            )
        st.run_id = run_id = run.info.run_id
        retry_if_locked(lambda: client.set_tag(run_id, "ife.sweep.exit_code", str(rc)))
        if client.get_run(run_id).info.status != "FAILED":
            retry_if_locked(lambda: client.set_terminated(run_id, status="FAILED"))
    if st.run_id is not None and log_path.exists():
        run_id = st.run_id
        retry_if_locked(lambda: client.log_artifact(run_id, str(log_path), "sweep"))


def _close_parent(client: Any, parent: str, result: SweepResult) -> None:
    counts = {
        k: sum(s.status == k for s in result.states)
        for k in ("finished", "failed", "stopped", "pending")
    }
    for key, value in counts.items():
        client.log_metric(parent, f"sweep/trials_{key}", value)
    if result.stopped_by is not None or (result.incomplete and not counts["failed"]):
        status = "KILLED"  # (not finished: resume the sweep)
    else:
        status = "FAILED" if counts["failed"] else "FINISHED"
    client.set_terminated(parent, status=status)


def final_table(states: Sequence[TrialState]) -> str:
    """Every trial: index, name, status, run and wall time."""
    lines = [f"{'#':>4}  {'trial':<40} {'status':<9} {'run':<33} wall"]
    for s in states:
        lines.append(
            f"{s.trial.index:>4}  {s.trial.name[:40]:<40} {s.status:<9} {s.run_id or '-':<33} "
            f"{_fmt_seconds(s.seconds)}"
        )
    return "\n".join(lines)
