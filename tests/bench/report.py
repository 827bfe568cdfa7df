"""The benchmark report: reads every bench/results/*.json there is and writes
bench/results/report.md with PNG plots beside it (matplotlib, Agg). Runs last in `make bench`.

    python -m tests.bench.report [--results bench/results]

Each section names the machine and the date of the run it shows, and says so when its result is
missing; nothing here measures anything, it only draws what the benchmarks wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from tests.bench.common import RESULTS  # noqa: E402

OURS, PEER = "#1f77b4", "#9e9e9e"
STACK = {"rollout": "#1f77b4", "scoring": "#ff7f0e", "update": "#2ca02c", "other": "#d62728"}

# (file stem, section title, command that produces it)
SECTIONS = [
    ("serving", "Serving vs `vllm serve`", "python -m tests.bench.serving"),
    ("feedback", "Feedback ingestion", "python -m tests.bench.feedback"),
    ("hotswap", "Hot-swap latency under load", "python -m tests.bench.hotswap"),
    ("reward", "Reward-model training vs TRL `RewardTrainer`", "python -m tests.bench.reward"),
    ("ppo", "PPO step vs TRL 1.12 `PPOTrainer`, with our breakdown", "python -m tests.bench.ppo"),
    ("rollout", "Rollouts vs transformers `generate()`", "python -m tests.bench.rollout"),
    ("loop", "Time from feedback to promoted adapter", "the closed-loop demo"),
]


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if 0.01 <= abs(value) < 1e5 or value == 0 else f"{value:.3g}"
    return str(value).replace("|", "\\|")  # a pipe would end the table cell


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def provenance(result: dict) -> str:
    # loop.json comes from `rlhf-loop up --simulate-users`, not from tests.bench.common: it may not say
    machine = result.get("machine", {})
    where = f"{machine['cpus']} CPUs, {machine['platform']}" if machine else "a machine it does not record"
    at = result.get("at") or result.get("started_at") or "at an unrecorded time"
    return f"*Run {at} on {where}.*"


def ratio_bars(ax, labels: tuple[str, str], values: tuple[float, float], unit: str, title: str, ratio_text: str) -> None:
    """Two bars, ours first, each labelled with its value; the ratio in the title."""
    bars = ax.bar(labels, values, color=[OURS, PEER], width=0.55)
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=2)
    ax.set_ylabel(unit)
    ax.set_title(f"{title}\n{ratio_text}", fontsize=10)
    ax.set_ylim(0, max(values) * 1.2)
    ax.grid(axis="y", alpha=0.3)


def save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return f"![{name}]({name})"


# -- sections: each returns Markdown lines and writes its plots into `out` --------------------------

def serving(r: dict, out: Path) -> list[str]:
    ours, peer, ratio = r["ours"], r["peer"], r["throughput_ratio_ours_over_peer"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    ratio_bars(a, ("rlhf-loop", "vllm serve"), (ours["output_tokens_per_s"], peer["output_tokens_per_s"]),
               "output tokens/s", "Throughput", f"ours ÷ peer = {ratio:.2f} (target ≥ {r['target_ratio']})")
    latency_pairs(b, ours, peer, [("latency_p50_s", "p50"), ("latency_p99_s", "p99")], ("rlhf-loop", "vllm serve"))
    b.set_title("Request latency", fontsize=10)
    return [
        f"{ours['requests']} chats × {ours['output_tokens'] // ours['requests']} tokens at {ours['concurrency']} "
        f"concurrent, interaction logging {'on' if r['interaction_logging'] else 'off'}; "
        # results written before the ABBA rounds have no best_of: one run per side
        f"best of {r.get('best_of', 1)} run(s) per side.",
        "",
        table(["", "rlhf-loop", "vllm serve"], [
            ["output tok/s", ours["output_tokens_per_s"], peer["output_tokens_per_s"]],
            ["latency p50 (s)", ours["latency_p50_s"], peer["latency_p50_s"]],
            ["latency p99 (s)", ours["latency_p99_s"], peer["latency_p99_s"]],
            ["failures", ours["failures"], peer["failures"]],
        ]),
        "",
        f"Ratio ours ÷ peer: **{ratio:.2f}** (target ≥ {r['target_ratio']}: {fmt(r['meets_target'])}).",
        "",
        save(fig, out, "serving.png"),
    ]


def latency_pairs(ax, ours: dict, peer: dict, keys: list[tuple[str, str]], names: tuple[str, str]) -> None:
    """Grouped bars: for each (key, label), ours beside the peer."""
    width = 0.38
    xs = range(len(keys))
    for offset, side, colour, name in ((-width / 2, ours, OURS, names[0]), (width / 2, peer, PEER, names[1])):
        values = [side[key] if side[key] is not None else 0.0 for key, _ in keys]
        bars = ax.bar([x + offset for x in xs], values, width, color=colour, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=2, fontsize=8)
    ax.set_xticks(list(xs), [label for _, label in keys])
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def feedback(r: dict, out: Path) -> list[str]:
    ours, peer = r["ours"], r["peer"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    labels = ["accepted\n(API, durable)", "delivered\n(to Kafka)", "raw producer\n(peer ceiling)"]
    values = [ours["accepted_per_s"], ours["delivered_per_s"], peer["kafka_python_raw_producer_events_per_s"]]
    bars = a.bar(labels, values, color=[OURS, OURS, PEER])
    a.bar_label(bars, labels=[f"{v:.0f}" for v in values], padding=2)
    a.set_ylim(0, max(values) * 1.15)
    a.set_ylabel("events/s")
    a.set_title(f"Ingestion rate, {ours['concurrency']} concurrent clients\n"
                f"delivered ÷ raw producer = {r['ratio_delivered_over_raw_producer']:.3f}", fontsize=10)
    a.grid(axis="y", alpha=0.3)
    bars = b.bar(["p50", "p99"], [ours["latency_p50_s"] * 1e3, ours["latency_p99_s"] * 1e3], color=OURS)
    b.bar_label(bars, fmt="%.0f ms", padding=2)
    b.set_ylim(0, ours["latency_p99_s"] * 1e3 * 1.15)
    b.set_ylabel("ms")
    b.set_title("Feedback API latency (thumb accepted, 202)", fontsize=10)
    b.grid(axis="y", alpha=0.3)
    return [
        table(["figure", "value"], [
            ["thumbs sent", ours["events"]], ["failures", ours["failures"]],
            ["accepted/s (HTTP 202 after a durable outbox append)", ours["accepted_per_s"]],
            ["delivered/s (in Kafka)", ours["delivered_per_s"]],
            ["latency p50 / p99 (ms)", f"{ours['latency_p50_s'] * 1e3:.0f} / {ours['latency_p99_s'] * 1e3:.0f}"],
            ["backlog drained after the last 202 (s)", ours["backlog_drain_after_last_202_s"]],
            [f"peer: kafka-python raw producer/s (acks={peer['acks']}, idempotent={peer['idempotent']})",
             peer["kafka_python_raw_producer_events_per_s"]],
        ]),
        "",
        f"Note from the run: {r['note']}.",
        "",
        save(fig, out, "feedback.png"),
    ]


def hotswap(r: dict, out: Path) -> list[str]:
    ours, peer, s = r["ours"], r["peer"], r["settings"]
    peer_ran = peer.get("run", True)  # {"run": false, "note": ...} when the bench ran with --no-peer
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    moves = [m["move"] for m in ours["moves"]]
    width = 0.38 if peer_ran else 0.6
    ours_t = [m["time_to_serve_s"] or 0.0 for m in ours["moves"]]
    bars = a.bar([x - (width / 2 if peer_ran else 0) for x in moves], ours_t, width, color=OURS,
                 label="rlhf-loop (admin API → pointer → hot swap)")
    a.bar_label(bars, labels=[f"{v:.2f}" for v in ours_t], padding=2, fontsize=7)
    if peer_ran:
        peer_t = [m["time_to_serve_s"] or 0.0 for m in peer["moves"]]
        bars = a.bar([x + width / 2 for x in moves], peer_t, width, color=PEER, label="vLLM /v1/load_lora_adapter")
        a.bar_label(bars, labels=[f"{v:.2f}" for v in peer_t], padding=2, fontsize=7)
    a.set_xticks(moves, [f"{m['move']}\n{m['action']}" if m["action"] != "load_lora_adapter" else str(m["move"])
                         for m in ours["moves"]], fontsize=8)
    a.set_ylabel("seconds")
    a.set_title("Move → first response by the new adapter", fontsize=10)
    a.set_ylim(0, max(ours_t + (peer_t if peer_ran else [])) * 1.35)
    a.legend(fontsize=7)
    a.grid(axis="y", alpha=0.3)

    def flat(side: dict) -> dict:
        return {f"{group} {q}": side[key][f"latency_{q}_s"]
                for group, key in (("steady", "steady_window"), ("swap", "swap_windows")) for q in ("p50", "p95")}

    keys = [(k, k) for k in flat(ours)]
    if peer_ran:
        latency_pairs(b, flat(ours), flat(peer), keys, ("rlhf-loop", "vLLM runtime LoRA"))
    else:
        bars = b.bar([k for k, _ in keys], [v or 0.0 for v in flat(ours).values()], color=OURS)
        b.bar_label(bars, fmt="%.2f", padding=2, fontsize=8)
        b.set_ylabel("seconds")
    b.set_title(f"Chat latency, steady vs swap windows ({s['concurrency']} clients per server)", fontsize=10)
    b.grid(axis="y", alpha=0.3)

    rows = []
    for name, side in (("rlhf-loop", ours), ("vLLM runtime LoRA", peer)):
        if name != "rlhf-loop" and not peer_ran:
            continue
        rows.append([name, side["time_to_serve_s"]["median"], side["time_to_serve_s"]["max"],
                     f"{side['time_to_serve_s']['moves_served']}/{side['time_to_serve_s']['moves']}",
                     side["steady_window"]["latency_p50_s"], side["steady_window"]["latency_p95_s"],
                     side["swap_windows"]["latency_p50_s"], side["swap_windows"]["latency_p95_s"],
                     f"{side['failures']} of {side['requests']}"])
    cores = s["engine_cores"]  # {"ours": "0", "peer": "1"}, or a sentence when vLLM chose
    cores = ", ".join(f"core {core} ({side})" for side, core in cores.items()) if isinstance(cores, dict) else cores
    lines = [
        f"{s['concurrency']} chat clients per server back to back ({s['max_tokens'] // 2}–{s['max_tokens'] * 3 // 2} "
        f"tokens each) plus a 1-token probe; {len(moves)} moves per server ({s['design']}; engines bound to "
        f"{cores}), {s['gap_s']:.0f} s apart; "
        f"swap window: the {s['swap_window_s']:.0f} s after each move; steady: {ours['steady_window']['definition']} "
        f"(a window of {ours['steady_window']['seconds']:.0f} s before the first move).",
        "",
        table(["side", "time to serve median (s)", "max (s)", "moves served", "steady p50 (s)", "steady p95 (s)",
               "swap p50 (s)", "swap p95 (s)", "failures"], rows),
        "",
    ]
    lines.append(f"Ours, inside the server: {ours['server_swap_s_mean']:.2f} s mean from seeing the pointer move to "
                 f"routing to the new adapter (load included; the pointer is read every {s['adapter_poll_s']} s)."
                 + (f" Peer: its load call took {peer['load_call_s_mean']:.2f} s mean." if peer_ran else ""))
    lines.append("")
    if peer_ran and r["time_to_serve_ratio_peer_over_ours"] is not None:
        lines.append(f"Time to serve, peer ÷ ours: **{r['time_to_serve_ratio_peer_over_ours']:.2f}** "
                     f"({r['ratio_definition']}).")
    else:
        lines.append("**No peer was run** in this run: no speed claim.")
    lines += ["", f"Note from the run: {r['note']}", "", save(fig, out, "hotswap.png")]
    return lines


def reward(r: dict, out: Path) -> list[str]:
    ours, trl, ratio = r["ours"], r["trl"], r["samples_per_s_ratio_ours_over_trl"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ratio_bars(ax, ("rlhf-loop", f"TRL {trl['version']}"), (ours["samples_per_s"], trl["samples_per_s"]),
               "preference pairs/s", "Reward-model training", f"ours ÷ TRL = {ratio:.2f}")
    return [
        f"{r['data']['train_pairs']} training pairs, held out {r['data']['heldout_pairs']}; LoRA r="
        f"{r['config']['lora']['r']}, batch {r['config']['batch_size']}, lr {r['config']['learning_rate']}, "
        f"{r['config']['dtype']}, {r['config']['torch_threads']} torch threads.",
        "",
        table(["", "rlhf-loop", f"TRL {trl['version']} RewardTrainer"], [
            ["pairs/s", ours["samples_per_s"], trl["samples_per_s"]],
            ["train seconds", ours["train_s"], trl["train_s"]],
            ["held-out accuracy", ours["heldout_accuracy"], trl["heldout_accuracy"]],
            ["mean train loss", ours["train_loss_mean"], trl["train_loss_mean"]],
            ["trainable parameters", ours["trainable_params"], trl["trainable_params"]],
        ]),
        "",
        f"Ratio ours ÷ TRL (pairs/s): **{ratio:.2f}**; held-out accuracy delta {fmt(r['accuracy_delta'])}.",
        "",
        save(fig, out, "reward.png"),
    ]


def ppo(r: dict, out: Path) -> list[str]:
    ours, peer, ratio = r["ours"], r["peer"], r["step_time_ratio_peer_over_ours"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
    ratio_bars(a, ("rlhf-loop", f"TRL {peer['versions']['trl']}"), (ours["mean_step_s"], peer["mean_step_s"]),
               "seconds per PPO step (lower is better)", "Mean PPO step", f"TRL ÷ ours = {ratio:.2f}")
    steps = ours["breakdown"]
    bottom = [0.0] * len(steps)
    xs = list(range(1, len(steps) + 1))
    for part, colour in STACK.items():
        values = [step[f"{part}_s"] for step in steps]
        b.bar(xs, values, bottom=bottom, color=colour, label=part, width=0.6)
        bottom = [low + v for low, v in zip(bottom, values)]
    b.bar(len(steps) + 1.2, peer["mean_step_s"], color=PEER, width=0.6, label=f"TRL mean step")
    b.set_xticks(xs + [len(steps) + 1.2], [f"ours\nstep {x}" for x in xs] + ["TRL\nmean"], fontsize=8)
    b.set_ylabel("seconds")
    shares = ours["shares"]
    b.set_title("Our step breakdown: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items() if v >= 0.005), fontsize=10)
    b.legend(fontsize=8, loc="upper right", ncols=2)
    b.set_ylim(0, max(max(bottom), peer["mean_step_s"]) * 1.35)
    b.grid(axis="y", alpha=0.3)
    st = r["settings"]
    return [
        f"{st['batch_size']} prompts × {st['max_new_tokens']} tokens per step, LoRA r={st['lora']['r']}, "
        f"{st['ppo_epochs']} epochs × {st['batch_size'] // st['minibatch_size']} minibatches, {st['dtype']} on "
        f"{st['device']}; {len(ours['step_s'])} timed steps after {len(ours['warmup_step_s'])} warm-up.",
        "",
        table(["", "rlhf-loop", f"TRL {peer['versions']['trl']} PPOTrainer"], [
            ["mean step (s)", ours["mean_step_s"], peer["mean_step_s"]],
            ["steps (s)", ", ".join(f"{v:.1f}" for v in ours["step_s"]), ", ".join(f"{v:.1f}" for v in peer["step_s"])],
            ["trainable parameters", ours["trainable_parameters"], peer["trainable_parameters"]],
            ["peak RSS (MiB)", ours["peak_rss_mib"], peer["peak_rss_mib"]],
        ]),
        "",
        f"Ratio TRL ÷ ours (seconds per step): **{ratio:.2f}** ({r['ratio_definition']}).",
        "",
        "Our breakdown per step: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()) + ".",
        "",
        f"Memory: {r['memory_note']}.",
        "",
        save(fig, out, "ppo.png"),
    ]


def rollout(r: dict, out: Path) -> list[str]:
    ours, peer, ratio = r["ours"], r["peer"], r["throughput_ratio_ours_over_peer"]
    st = r["settings"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ratio_bars(ax, ("rlhf-loop\n(vLLM + LoRARequest)", "transformers\ngenerate()"),
               (ours["output_tokens_per_s"], peer["output_tokens_per_s"]), "output tokens/s", "Rollouts",
               f"ours ÷ peer = {ratio:.2f}")
    return [
        f"{st['prompts']} prompts × up to {st['max_tokens']} tokens, temperature {st['temperature']}, "
        f"{st['rounds']} rounds, {st['dtype']} on {st['device']}.",
        "",
        table(["", "rlhf-loop", "transformers generate()"], [
            ["output tok/s", ours["output_tokens_per_s"], peer["output_tokens_per_s"]],
            ["output tokens", ours["output_tokens"], peer["output_tokens"]],
            ["seconds", ours["seconds"], peer["seconds"]],
            ["mean response tokens", ours["mean_response_tokens"], peer["mean_response_tokens"]],
        ]),
        "",
        f"Ratio ours ÷ peer: **{ratio:.2f}** ({r['ratio_definition']}); greedy check: "
        f"{r['greedy_check']['identical_16_token_prefixes']}/{r['greedy_check']['prompts']} identical prefixes.",
        "",
        save(fig, out, "rollout.png"),
    ]


def loop(r: dict, out: Path) -> list[str]:
    """Whatever the closed-loop demo wrote: its scalar figures as a table, its events as a timeline."""
    scalars = flatten({k: v for k, v in r.items() if k not in ("events", "trajectory", "benchmark", "at", "machine")})
    milestones = [(k, v) for k, v in scalars.items() if k.startswith("feedback_to_")]
    lines = []
    if milestones:
        lines += ["From the first rating: " + ", ".join(
            f"{k.removeprefix('feedback_to_').removesuffix('_s')} **{'not reached' if v is None else f'{v:.1f} s'}**"
            for k, v in milestones) + ".", ""]
    lines += [table(["key", "value"], [[f"`{k}`", v] for k, v in scalars.items()]), ""]
    events = r.get("events")
    if isinstance(events, list) and events and all(isinstance(e, dict) and "t_s" in e and "event" in e for e in events):
        events = sorted(events, key=lambda e: e["t_s"])
        fig, ax = plt.subplots(figsize=(10, 0.9 + 0.32 * len(events)))
        ys = list(range(len(events), 0, -1))
        ax.hlines(ys, 0, [e["t_s"] for e in events], color="#c7d7ea", linewidth=1)
        ax.plot([e["t_s"] for e in events], ys, "o", color=OURS)
        for e, y in zip(events, ys):
            ax.annotate(f"{e['event']}  ({e['t_s']:.1f} s)", (e["t_s"], y), xytext=(6, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_yticks([])
        ax.set_ylim(0.4, len(events) + 0.6)
        ax.set_xlabel("t_s (seconds)")
        end = max(events[-1]["t_s"], r.get("elapsed_s") or 0.0)  # the demo's own length, when it says
        ax.set_xlim(min(0, events[0]["t_s"]), end * 1.2 + 1)
        ax.set_title("Closed-loop demo: events of loop.json", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        lines.append(save(fig, out, "loop.png"))
    elif events is not None:
        lines.append(f"The `events` list has no `t_s`/`event` entries to plot ({len(events)} entries).")
    trajectory = r.get("trajectory")
    if isinstance(trajectory, list) and trajectory:
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.plot([m["minute"] for m in trajectory], [m["mean_score"] for m in trajectory], "o-", color=OURS)
        for row in r.get("promotions") or []:
            ax.axvline(row["at_s"] / 60, color="#888", linestyle="--", linewidth=1)
            ax.annotate(row["version"], (row["at_s"] / 60, 1.0), fontsize=8, va="top")
        ax.set_xlabel("minute of the run")
        ax.set_ylabel("mean preference score")
        ax.set_ylim(0, 1.05)
        ax.set_title("Served score over the run (dashed: promotions)", fontsize=10)
        ax.grid(alpha=0.3)
        lines.append(save(fig, out, "loop_trajectory.png"))
    return lines


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        return {prefix: json.dumps(value)[:120]}
    return {prefix: value}


RENDER: dict[str, Callable[[dict, Path], list[str]]] = {
    "serving": serving, "feedback": feedback, "hotswap": hotswap, "reward": reward, "ppo": ppo,
    "rollout": rollout, "loop": loop,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the benchmark JSON; report written there")
    args = parser.parse_args()
    out: Path = args.results
    out.mkdir(parents=True, exist_ok=True)
    found = {path.stem: path for path in sorted(out.glob("*.json"))}

    lines = [
        "# rlhf-loop benchmark report",
        "",
        f"Generated {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by `python -m tests.bench.report` from "
        f"`{display(out)}/*.json` ({', '.join(found) or 'none found'}). Every ratio compares with a peer run on the same "
        "machine in the same run; each section names its own run, and results from different runs are not compared "
        "with each other.",
        "",
    ]
    contents = [f"- [{title}](#{anchor(title)})" for _, title, _ in SECTIONS]
    lines += contents + [""]
    for stem, title, command in SECTIONS:
        lines += [f"## {title}", ""]
        if stem not in found:
            if stem == "loop":
                lines += ["**Missing**: `loop.json` not found: the closed-loop demo has not been run, so there is no "
                          "measured time from feedback to a promoted adapter.", ""]
            else:
                lines += [f"**Missing**: `{stem}.json` not found; run `{command}` (or `make bench`).", ""]
            continue
        result = json.loads(found[stem].read_text())
        lines += [provenance(result), ""]
        try:
            lines += RENDER[stem](result, out)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            # an older or partial result file: say so in the report rather than lose every other section
            plt.close("all")
            lines.append(f"**Could not render** `{stem}.json` ({type(error).__name__}: {error}); rerun `{command}`.")
        lines.append("")
    others = sorted(set(found) - {stem for stem, _, _ in SECTIONS} - {"report"})
    if others:
        lines += ["## Other results", "", "Found but not drawn: " + ", ".join(f"`{o}.json`" for o in others), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    print(f"{report} ({len(found)} result files, {len(list(out.glob('*.png')))} plots)")
    return 0


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(RESULTS.parents[1]))
    except ValueError:
        return str(path)


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


if __name__ == "__main__":
    sys.exit(main())
