"""PPO benchmark: seconds per PPO step of our trainer (vLLM rollouts, value head on the policy
trunk, reference = adapter disabled) against TRL 1.12's PPOTrainer (HF `generate()`, a separate
full value model, reference = adapter disabled) on the same model, prompts, batch, response length,
LoRA and step count, fp32 on CPU, in the same run. Also breaks each of our steps into rollout /
scoring / update time. Writes bench/results/ppo.json.

    python -m tests.bench.ppo [--steps 3] [--warmup-steps 1] [--batch-size 8] [--max-new-tokens 32]

The peer runs in its own venv (`make bench/.venv-trl112/.installed`, or `--peer-python`). Both
sides score with the same reward model: ours trained once here by `refresh()` on the synthetic rule
of tests/learner, then exported (LoRA merged, score head kept) as a plain sequence-classification
checkpoint that TRL loads with AutoModelForSequenceClassification. `--work-dir` keeps the reward
model between runs.
"""

from __future__ import annotations

import os

# torch's OpenMP threads spin while they wait; on a shared CPU (other jobs on the same cores) that
# made a forward + backward 6x slower here. Passive waiting must be chosen before torch loads its
# OpenMP runtime; the child processes (the TRL peer, vLLM's workers) inherit it. Recorded in the JSON.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402
import torch  # noqa: E402
from rich.progress import Progress, TimeElapsedColumn  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from feedback.settings import RuntimeSettings  # noqa: E402
from learner.dataset import FeedbackData, as_messages  # noqa: E402
from learner.config import PPOConfig  # noqa: E402
from learner.ppo import PPOTrainer  # noqa: E402
from learner.reward_model import RewardModel, load_current, refresh  # noqa: E402
from learner.rollout import VLLMRollouts  # noqa: E402
from rlhf_loop.model import prepare  # noqa: E402
from tests.bench.common import write_result  # noqa: E402
from tests.helpers import RULE_CONFIG, synthetic  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PEER_PYTHON = REPO / "bench" / ".venv-trl112" / "bin" / "python"
PEER_SCRIPT = Path(__file__).with_name("trl_ppo_peer.py")
TOPICS = ["rivers", "owls", "bread", "chess", "jazz", "tea", "maps", "bees", "kites", "coral", "deserts", "robots"]
# as in tests/learner/test_ppo.py: short answers, so most end (EOS) inside the token budget
PROMPTS = [(("user", f"In one short sentence, what are {t}?"),) for t in TOPICS]
# scoring sees the whole prompt + response (the system prompt alone is ~30 tokens), as TRL's does
SCORING_CONFIG = RULE_CONFIG.model_copy(update={"max_length": 256})


class PeakRSS:
    """Samples the resident memory of a process and its children (summed) in a thread."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.process, self.every_s = psutil.Process(pid), every_s
        self.peak_tree = self.peak_self = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                own = self.process.memory_info().rss
                children = sum(c.memory_info().rss for c in self.process.children(recursive=True))
            except psutil.NoSuchProcess:  # the process, or one of its children, ended meanwhile
                continue
            self.peak_self, self.peak_tree = max(self.peak_self, own), max(self.peak_tree, own + children)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def as_dict(self) -> dict[str, float]:
        return {"peak_rss_mib": self.peak_self / 2**20, "peak_rss_with_children_mib": self.peak_tree / 2**20}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that over fork and
    exec, so a child started by a big parent reports at least the parent's size."""
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def reward_model(model: Path, work: Path) -> tuple[Path, Path, dict]:
    """Train (once per work dir) the rule reward model; export it for TRL; check both score alike.

    Returns (our reward-model root, the exported directory, a report)."""
    root, export = work / "reward-models", work / "reward-model-seqcls"
    report: dict = {}
    if not (root / "CURRENT").exists():
        pairs, thumbs = synthetic(seed=0, count=120)
        started = time.perf_counter()
        refreshed = refresh(model, root, FeedbackData(pointwise=thumbs, pairs=pairs), RULE_CONFIG)
        report.update(train_s=time.perf_counter() - started, heldout=refreshed.heldout, train_pairs=refreshed.train_pairs)
    ours, version = load_current(model, root, SCORING_CONFIG)
    report["version"] = version
    if not (export / "config.json").exists():
        # merge the LoRA into the base weights; the score head (a PEFT modules_to_save copy) comes along
        merged = RewardModel.create(model, SCORING_CONFIG, warm_start=root / version).model.merge_and_unload()
        merged.save_pretrained(export)
        ours.tokenizer.save_pretrained(export)

    plain = AutoModelForSequenceClassification.from_pretrained(export, num_labels=1, dtype=torch.float32).eval()
    texts = ours.texts(PROMPTS[:4], ["Owls hunt at night. Want an example?", "Bread is baked.", "Tea.", "Hm"])
    batch = ours.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        difference = (plain(**batch).logits[:, 0] - ours.score_texts(texts)).abs().max().item()
    assert difference < 1e-3, f"the exported reward model scores differently from ours: max |diff| {difference}"
    report["export_max_abs_diff"] = difference
    return root, export, report


def run_ours(model: Path, root: Path, work: Path, prompts: list, args: argparse.Namespace) -> dict:
    """Our side, in a process of its own (`--side ours`), so its memory is its own as the peer's is."""
    scorer, _ = load_current(model, root, SCORING_CONFIG)
    config = PPOConfig(steps=args.warmup_steps + args.steps, batch_size=args.batch_size, minibatch_size=args.minibatch_size,
                       ppo_epochs=args.ppo_epochs, max_new_tokens=args.max_new_tokens, temperature=1.0,
                       learning_rate=args.learning_rate, lora_rank=8, lora_alpha=16, kl_coef=0.05, kl_estimator="k3",
                       rollout_kv_cache_mib=args.kv_cache_mib, seed=0)
    started = time.perf_counter()
    rollouts = VLLMRollouts(model, max_model_len=512, lora_rank=config.lora_rank, kv_cache_mib=config.rollout_kv_cache_mib)
    engine_start_s = time.perf_counter() - started
    trainer = PPOTrainer(model, work / "ours-run", config, lambda p, texts: scorer.score(p, texts), rollouts=rollouts)
    rows = []
    for _ in range(config.steps):
        # train_step rather than train(): no checkpoint writes between the timed steps
        rows.append(trainer.train_step(prompts))
        print(f"ours step {len(rows)} {rows[-1]['time/step_s']:.2f}s", flush=True)  # read by run_child
    trainable = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)  # LoRA + value head
    rollouts.llm.llm_engine.engine_core.shutdown()

    timed = rows[args.warmup_steps :]
    parts = ("rollout", "scoring", "update")
    breakdown = [{**{f"{p}_s": r[f"time/{p}_s"] for p in parts},
                  "other_s": r["time/step_s"] - sum(r[f"time/{p}_s"] for p in parts), "step_s": r["time/step_s"]}
                 for r in timed]
    total = sum(b["step_s"] for b in breakdown)
    return {
        "step_s": [b["step_s"] for b in breakdown],
        "warmup_step_s": [r["time/step_s"] for r in rows[: args.warmup_steps]],
        "mean_step_s": total / len(breakdown),
        "breakdown": breakdown,
        "shares": {p: sum(b[f"{p}_s"] for b in breakdown) / total for p in (*parts, "other")},
        "engine_start_s": engine_start_s,
        "torch_threads": torch.get_num_threads(),
        "trainable_parameters": trainable,
        "peak_rss_mib": peak_rss_mib(),
        "metrics": rows,
    }


def run_child(label: str, argv: list[str], out: Path, log_path: Path, steps: int) -> dict:
    """Run one side as a child process that prints `<side> step N <seconds>s` per PPO step and
    writes its JSON to `out`; sample the memory of its process tree meanwhile."""
    started = time.perf_counter()
    with log_path.open("w") as log, Progress(*Progress.get_default_columns(), TimeElapsedColumn()) as progress:
        bar = progress.add_task(f"{label}: loading", total=steps)
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        with PeakRSS(child.pid) as memory:
            for line in child.stdout:
                log.write(line)
                if line.startswith(("ours step ", "peer step ")):
                    progress.update(bar, advance=1, description=f"{label}: PPO step {line.split()[-1]}")
            child.wait()
    if child.returncode != 0:  # report the exact failure instead of numbers
        return {"error": f"exit status {child.returncode}", "log_tail": log_path.read_text()[-3000:], "argv": argv}
    return {**json.loads(out.read_text()), "wall_s": time.perf_counter() - started,
            "sampled_rss": memory.as_dict(), "log": str(log_path), "argv": argv}


def shared_args(args: argparse.Namespace) -> list[str]:
    return ["--warmup-steps", str(args.warmup_steps), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--minibatch-size", str(args.minibatch_size), "--ppo-epochs", str(args.ppo_epochs),
            "--learning-rate", str(args.learning_rate)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="PPO steps timed on each side.")
    parser.add_argument("--warmup-steps", type=int, default=1, help="PPO steps run first on each side, not timed.")
    parser.add_argument("--batch-size", type=int, default=8, help="Prompts per PPO step.")
    parser.add_argument("--minibatch-size", type=int, default=4, help="Rollouts per gradient step.")
    parser.add_argument("--ppo-epochs", type=int, default=2, help="Passes over each step's rollouts.")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Longest response.")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW learning rate, both sides.")
    parser.add_argument("--kv-cache-mib", type=int, default=128, help="KV cache of the vLLM engine, in MiB.")
    parser.add_argument("--peer-python", default=str(PEER_PYTHON), help="Python of the TRL 1.12 venv.")
    parser.add_argument("--skip-peer", action="store_true", help="Time only our trainer.")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep the reward model (and logs) here between runs.")
    parser.add_argument("--side", choices=("ours",), default=None, help=argparse.SUPPRESS)  # the child of run_child
    parser.add_argument("--json-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="rlhf-bench-ppo-"))
    work.mkdir(parents=True, exist_ok=True)
    base = RuntimeSettings()
    model = base.model or prepare(base.model_dir)
    # every step of both sides takes all of these prompts (TRL only shuffles their order)
    prompts = PROMPTS[: args.batch_size]
    if args.side == "ours":
        args.json_out.write_text(json.dumps(run_ours(model, work / "reward-models", work, prompts, args)))
        return 0
    prompts_file = work / "prompts.json"
    prompts_file.write_text(json.dumps([as_messages(p) for p in prompts]))

    load = {"start": os.getloadavg()}
    _, export, reward_report = reward_model(model, work)
    load["before_ours"] = os.getloadavg()
    ours_argv = [sys.executable, "-m", "tests.bench.ppo", "--side", "ours", "--json-out", str(work / "ours.json"),
                 "--work-dir", str(work), "--max-new-tokens", str(args.max_new_tokens),
                 "--kv-cache-mib", str(args.kv_cache_mib), *shared_args(args)]
    ours = run_child("ours", ours_argv, work / "ours.json", work / "ours.log", args.warmup_steps + args.steps)
    if "error" in ours:
        print(f"our trainer failed: {ours['error']}\n{ours['log_tail'][-1500:]}")
        return 1
    load["before_peer"] = os.getloadavg()
    if args.skip_peer:
        peer = {"skipped": True}
    elif not Path(args.peer_python).exists():
        peer = {"error": f"{args.peer_python} not found: run `make bench/.venv-trl112/.installed`"}
    else:
        peer_argv = [args.peer_python, str(PEER_SCRIPT), "--model", str(model), "--reward-model", str(export),
                     "--prompts", str(prompts_file), "--json-out", str(work / "peer.json"),
                     "--response-length", str(args.max_new_tokens), "--temperature", "1.0", "--lora-rank", "8",
                     "--lora-alpha", "16", "--kl-coef", "0.05", "--kl-estimator", "k3", "--seed", "0", *shared_args(args)]
        peer = run_child("TRL 1.12", peer_argv, work / "peer.json", work / "peer.log", args.warmup_steps + args.steps)
    load["end"] = os.getloadavg()

    ratio = peer["mean_step_s"] / ours["mean_step_s"] if "mean_step_s" in peer else None
    path = write_result("ppo", {
        "model": str(model),
        "settings": {
            "warmup_steps": args.warmup_steps, "steps": args.steps, "batch_size": args.batch_size,
            "minibatch_size": args.minibatch_size, "ppo_epochs": args.ppo_epochs, "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0, "learning_rate": args.learning_rate, "kl_coef": 0.05, "kl_estimator": "k3",
            "score_baseline": PPOConfig().score_baseline,  # run_ours keeps the default
            "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
            "dtype": "float32", "device": "cpu", "prompts": [p[0][1] for p in prompts], "vllm_kv_cache_mib": args.kv_cache_mib,
        },
        "reward_model": {**reward_report, "exported": str(export),
                         "note": "same weights on both sides; ours scores the chat-templated text (position: the "
                                 "newline after <|im_end|>), TRL scores prompt + response tokens at the last response token"},
        "ours": {"name": "learner.ppo.PPOTrainer (vLLM rollouts, value head on the policy trunk, reference = adapter "
                         "disabled)", **ours},
        "peer": {"name": "trl 1.12.0 PPOTrainer (LoRA via peft_config, reference = adapter disabled, full value model "
                         "initialised from the reward model, HF generate)", **peer},
        "step_time_ratio_peer_over_ours": ratio,
        "ratio_definition": "TRL mean seconds per timed PPO step / our mean seconds per timed PPO step; > 1: ours faster",
        "memory_note": "peak_rss_mib: the side's own process (VmHWM); sampled_rss: its process tree every 0.25 s, "
                       "pages shared between processes counted in each; ours' tree includes vLLM's engine-core and worker "
                       "processes and the weights + KV cache they reserve",
        "load_average_1_5_15": load,
        "omp_env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")},
        "work_dir": str(work),
    })
    shares = ", ".join(f"{k} {v:.0%}" for k, v in ours["shares"].items())
    print(f"ours: {ours['mean_step_s']:.2f} s/step ({shares})")
    if "mean_step_s" in peer:
        print(f"TRL 1.12 PPOTrainer: {peer['mean_step_s']:.2f} s/step; ratio (peer / ours) {ratio:.2f}")
    elif not args.skip_peer:
        print(f"TRL 1.12 PPOTrainer failed: {peer['error']}\n{peer.get('log_tail', '')[-1500:]}")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
