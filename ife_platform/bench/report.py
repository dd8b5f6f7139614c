"""The terminal report of ``ife bench``."""

from __future__ import annotations

from typing import Any

from ife_platform.bench.common import ENV_RATIO_TARGET, LEARNER_RATIO_TARGET


def fmt_rate(x: float) -> str:
    """A rate with thousands separators, two decimals below 100."""
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def format_report(results: dict[str, Any]) -> str:
    """Plain-text tables of everything measured."""
    lines: list[str] = []
    m = results["machine"]
    lines += [
        "== machine",
        f"cpu: {m['cpu_model']} ({m['usable_cpus']} usable of {m['logical_cpus']} logical)",
        f"python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads, "
        f"{m['torch_parallel_backend']}, OMP_WAIT_POLICY {m['omp_wait_policy']}), "
        f"torchrl {m['torchrl']}, tensordict {m['tensordict']}, ale-py {m['ale_py']}, "
        f"lightning {m['lightning']}",
        f"load average at start: {m['load_average']}",
    ]
    for env in results.get("env", []):
        lines += [
            "",
            f"== env steps/s, {env['game']}, {env['num_envs']} envs "
            f"(median of {env['rounds']}, {env['vector_steps_per_sample']} vector steps each; "
            f"target ratio >= {ENV_RATIO_TARGET})",
        ]
        for name, v in env["variants"].items():
            lines.append(f"  {name:40s} {fmt_rate(v['steps_per_s']):>8s}  ratio {v['ratio']:.2f}")
        if "collector_overhead_us" in env:
            lines.append(
                f"  {'collector work per vector step':40s} {env['collector_overhead_us']:6.0f} us"
                f"  (raw step {env['raw_step_us']:.0f} us: ceiling ratio "
                f"{env['overhead_ceiling_ratio']:.2f}; emulator replaced by recorded steps)"
            )
    for lr in results.get("learner", []):
        lines += [
            "",
            f"== learner updates/s, {lr['extractor']} (DER profile, batch 32, 1 env; median of "
            f"{lr['rounds']}, {lr['updates_per_sample']} updates each; target ratio >= "
            f"{LEARNER_RATIO_TARGET})",
            f"  {'platform (RainbowTask + Lightning)':40s} "
            f"{fmt_rate(lr['platform_updates_per_s']):>8s}",
            f"  {'bare PyTorch loop':40s} {fmt_rate(lr['bare_updates_per_s']):>8s}",
            f"  {'ratio':40s} {lr['ratio']:8.2f}",
        ]
        for precision, v in lr.get("precisions", {}).items():
            lines.append(
                f"  {'platform, ' + precision + ' (runs ' + v['resolved'] + ')':40s} "
                f"{fmt_rate(v['platform_updates_per_s']):>8s}  x{v['speedup']:.2f} of fp32"
            )
    ac = results.get("actors")
    if ac:
        lines += [
            "",
            f"== actor processes, {ac['game']}, {ac['actors']} actors x {ac['envs_per_actor']} "
            f"envs, {ac['extractor']}-LSTM policy acting (median of {ac['rounds']})",
        ]
        for name, v in ac["variants"].items():
            lines.append(f"  {name:40s} {fmt_rate(v['steps_per_s']):>8s}  ratio {v['ratio']:.2f}")
        lines.append(
            f"  {'policy step, 1 thread, ' + str(ac['envs_per_actor']) + ' envs':40s} "
            f"{ac['policy_step_ms']:8.2f} ms"
        )
        lines.append(
            f"  {'learner updates/s':40s} {ac['learner_updates_per_s']:8.2f}"
            f"  ({ac['rollout_steps_per_update']} agent steps per update)"
        )
    for sh in results.get("sharing", []):
        lines += [
            "",
            f"== two training runs at once, {sh['extractor']} (DER profile, {sh['game']}, "
            f"{sh['steps']} agent steps each; learning-phase agent steps/s; target: each of "
            "the pair >= 0.4x alone)",
        ]
        for mode, label in (("auto", "trainer.threads=0 (share)"), ("fixed", "")):
            v = sh[mode]
            label = label or f"trainer.threads={v['threads']} (fixed)"
            pair = ", ".join(f"{p:.1f}" for p in v["pair"])
            ratios = ", ".join(f"{r:.2f}" for r in v["ratios"])
            lines.append(
                f"  {label:32s} alone {v['alone']:6.1f}  pair {pair:>12s}  ratios {ratios}"
            )
    for pr in results.get("precision", []):
        ref = pr["reference"]
        lines += [
            "",
            f"== precision parity, {pr['extractor']} (DER profile, {pr['game']}: "
            f"{pr['updates']} updates of batch {pr['batch_size']} on fixed batches of a "
            f"{pr['snapshot_transitions']}-transition snapshot; maxima over windows of "
            f"{pr['runs'][0]['window']} updates)",
            f"  {'fp32 reference':40s} {ref['ms_per_update']:7.1f} ms/update  loss "
            f"{ref['loss_first_last'][0]:.3f} -> {ref['loss_first_last'][1]:.3f}, "
            f"Q {ref['q_first_last'][0]:.3f} -> {ref['q_first_last'][1]:.3f}",
        ]
        for run in pr["runs"]:
            lines.append(
                f"  {run['role']:40s} {run['ms_per_update']:7.1f} ms/update  "
                f"loss {100 * run['max_loss_rel']:5.2f} %  Q {run['max_q_abs']:.4f}  "
                f"priorities {100 * run['max_priority_rel']:5.2f} % (per transition "
                f"{100 * run['max_priority_l1']:5.2f} %)"
            )
    ex = results.get("explain")
    if ex:
        lines += [
            "",
            f"== ife explain, {ex['game']}, {ex['extractor']} (median of {ex['rounds']}, "
            f"{ex['steps']} agent steps each; target: recording overhead <= 10 %)",
        ]
        for name, v in ex["variants"].items():
            lines.append(
                f"  {name:40s} {fmt_rate(v['steps_per_s']):>8s} steps/s"
                f"  overhead {100 * v['overhead']:5.1f} %"
            )
        for name, v in ex["saliency"].items():
            lines.append(
                f"  {'saliency ' + name:40s} {v['frames_per_s']:8.2f} frames/s"
                f"  ({v['forwards_per_s']:.0f} forwards/s)"
            )
        an = ex.get("analysis")
        if an:
            lines.append(
                f"  analysis of one {an['steps']}-step game (defaults, no video): "
                "record s, analyse s, state KiB/step"
            )
            for name, v in an["agents"].items():
                lines.append(
                    f"  {'  ' + name:40s} {v['record_s']:8.2f} {v['analyse_s']:8.2f} "
                    f"{v['state_bytes_per_step'] / 1024:8.1f}"
                )
    rep = results.get("replay")
    if rep:
        lines += [
            "",
            f"== replay bytes per transition (capacity {rep['capacity']}, {rep['stored']} stored)",
        ]
        for k, v in rep["per_key_bytes_per_transition"].items():
            lines.append(f"  {k:40s} {v:>10,.0f}  {rep['dtypes'][k]}")
        lines += [
            f"  {'total':40s} {rep['bytes_per_transition']:>10,.0f}",
            f"  {'frame ring / limit 1.25*84*84':40s} "
            f"{rep['frame_bytes_per_transition']:>10,.0f} / {rep['limit_bytes']:,.0f}"
            f"  other {rep['overhead_bytes']:,.0f} B"
            f"  (stacked obs + next_obs took {rep['stacked_bytes_per_transition']:,})",
        ]
    lines += [
        "",
        f"load average at end: {results.get('load_average_end')}",
        f"wall time: {results.get('wall_s', 0):.0f} s",
    ]
    return "\n".join(lines)
