"""Helpers that tests and benchmarks share (imported, not fixtures; the fixtures are in conftest.py):
servers in subprocesses, polling, topics read from the start, constructed adapters and feedback, the
stand-in engine."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import httpx
from kafka.consumer.fetcher import ConsumerRecord

from feedback.broker import EmbeddedBroker
from feedback.events import InteractionEvent, Timings
from feedback.export import from_the_start
from learner.config import RewardConfig
from learner.dataset import Pair, Pointwise
from learner.registry import LORA_TARGET_MODULES
from learner.store import EventStore
from learner.settings import LearnerSettings


def run_directory(tmp_path_factory) -> Path:
    """This pytest run's own directory, shared by its xdist workers (pytest-N/popen-gwK -> pytest-N):
    where a session fixture that both workers need is made once."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s}s")


ADMIN_TOKEN = "test-operator-token"


class Process:
    """A command in its own process group (its children go with it), output to `log_path`, stopped with
    SIGTERM, then SIGKILL after a minute."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.process = subprocess.Popen(argv, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_answering(self, url: str, timeout_s: float = 600) -> None:
        wait_for(url, self.process, timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


class ServingServer(Process):
    """`python -m serving` (or `module`, e.g. tests.stand_in_serving) in a subprocess, like vLLM's RemoteOpenAIServer."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, module: str = "serving") -> None:
        self.home = Path(env["RLHF_HOME"])
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        super().__init__([sys.executable, "-m", module], env, log_path)

    def wait_ready(self, timeout_s: float = 300.0) -> None:
        """Wait for /readyz, probing /healthz meanwhile as a Kubernetes liveness probe would (2 s
        timeout): `live_probes` counts its answers before ready, `most_missed_in_a_row` its longest
        run of misses after the first answer (Kubernetes restarts a pod at 3 by default)."""
        self.live_probes = self.most_missed_in_a_row = missed = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serving exited with {self.process.returncode}; see {self.log_path}")
            alive, ready = self._probe("/healthz"), self._probe("/readyz")
            self.live_probes += alive
            missed = 0 if alive else missed + (self.live_probes > 0)
            self.most_missed_in_a_row = max(self.most_missed_in_a_row, missed)
            if alive and ready:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.base_url}/readyz not ready after {timeout_s}s")

    def _probe(self, path: str) -> bool:
        try:
            return httpx.get(f"{self.base_url}{path}", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


def read_topic(broker: EmbeddedBroker, topic: str, until: Callable[[list[dict]], bool], timeout_s: float = 30.0) -> list[dict]:
    """Every record of `topic` from the start, as JSON (not parsed as events: tests see what is on the
    wire), polling until `until(records)` holds or the time is up."""
    with from_the_start(broker.bootstrap_servers, [topic], client_id="rlhf-tests") as (consumer, _):
        records: list[dict] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(json.loads(record.value) for record in batch)
            if until(records):
                break
        return records


def service_env(home: Path, model: Path | None, broker: EmbeddedBroker, **extra: str) -> dict[str, str]:
    """The environment of a service process; `model` None for the stand-in engine, which needs none."""
    env = dict(os.environ)
    env.update(RLHF_HOME=str(home), RLHF_KAFKA_BOOTSTRAP_SERVERS=",".join(broker.bootstrap_servers), **extra)
    if model is not None:
        env["RLHF_MODEL"] = str(model)
    return env


def stand_in_adapter(out: Path) -> Path:
    """An adapter directory for registry tests: the registry stores its files, nothing loads them."""
    out.mkdir()
    (out / "adapter_config.json").write_text('{"r": 8}')
    (out / "adapter_model.safetensors").write_bytes(b"weights")
    return out


def write_lora_adapter(model_dir: Path, out: Path, *, seed: int, rank: int = 8) -> Path:
    """A real PEFT LoRA for the model with random (non-zero) weights, so it changes answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


def sft_adapter(model_dir: Path, out: Path, examples: list[tuple[str, str]], *, steps: int, learning_rate: float,
                seed: int = 0) -> Path:
    """A LoRA fine-tuned to give `examples`' answers (loss on answer tokens only): test candidates
    with a known character (rude, repetitive, polite)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from learner.reward_model import training_autocast

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGET_MODULES))
    rows = []
    for prompt, answer in examples:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in rows])[:, None]).long()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    for _ in range(steps):
        with training_autocast("auto"):  # bfloat16 where the CPU computes it natively: 1.4x faster there, ~30x slower elsewhere
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out)
    return out


# -- feedback on a hidden rule (the learner tests' reward model) ---------------------------------------
TOPICS = ["rivers", "volcanoes", "bread", "chess", "owls", "jazz", "glaciers", "tea", "bridges", "comets",
          "tulips", "robots", "deserts", "violins", "bees", "maps", "castles", "coral", "lanterns", "kites"]
OPENERS = ["{t} are fascinating.", "People have loved {t} for ages.", "There is a lot to say about {t}.",
           "{t} come in many kinds.", "Here is a short note on {t}."]
FOLLOW_UPS = ["Would you like to know more?", "Shall I go on?", "Want an example?", "Which part interests you?"]
ENDINGS = ["That is all.", "I hope this helps.", "Enjoy.", "End of answer."]

RULE_CONFIG = RewardConfig(epochs=1, batch_size=8, max_length=48, heldout_fraction=0.25, pointwise_weight=0.5)


def synthetic(seed: int, count: int) -> tuple[list[Pair], list[Pointwise]]:
    """The hidden rule: an answer that ends with a follow-up question is preferred."""
    rng = random.Random(seed)
    pairs, thumbs = [], []
    for i in range(count):
        topic = rng.choice(TOPICS)
        prompt = (("user", f"Tell me about {topic}. ({i})"),)
        body = rng.choice(OPENERS).format(t=topic.capitalize())
        good, bad = f"{body} {rng.choice(FOLLOW_UPS)}", f"{body} {rng.choice(ENDINGS)}"
        pairs.append(Pair(prompt, good, bad, f"user-{i % 7}"))
        if i % 2 == 0:  # fewer thumbs than pairs, as in real traffic
            thumbs.append(Pointwise(prompt, good if i % 4 else bad, 1.0 if i % 4 else 0.0, f"user-{i % 7}"))
    return pairs, thumbs


def record(value: bytes, offset: int) -> ConsumerRecord:
    """A consumed Kafka record of `value`, as the learner's ingest reads it."""
    return ConsumerRecord(topic="rlhf.feedback", partition=0, leader_epoch=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=b"k", value=value, headers=[], checksum=None, serialized_key_size=1,
                          serialized_value_size=len(value), serialized_header_size=-1)


def interaction(i: int, sampling: dict) -> InteractionEvent:
    return InteractionEvent(response_id=f"r{i}:0", conversation_id=f"c{i}", user_id="u", model="m", adapter_version=None,
                            messages=[{"role": "user", "content": "hi"}], response="hello", finish_reason="stop",
                            sampling=sampling, prompt_tokens=3, completion_tokens=1, timings=Timings(time_to_first_token_s=0.1, total_s=0.2))


def seeded_store(path: Path, samplings: list[dict]) -> EventStore:
    store = EventStore(path)
    store.store([record(interaction(i, s).to_wire(), i) for i, s in enumerate(samplings)])
    return store



# the gates before issue 22 ("gates that see what users will see"): these, and of degeneration its three older checks
GATES_BEFORE_ISSUE_22 = ("weights", "kl", "win_rate", "safety", "likelihood")


def verdict_before_issue_22(report: dict, settings: LearnerSettings) -> dict:
    """What the gates of before issue 22 would have said of a report's candidate (its figures, their thresholds)."""
    gates = {g["name"]: g for g in report["gates"]}
    figures = gates["degeneration"]["figures"]
    old_degeneration = (figures["empty_rate"] <= settings.gate_max_empty_rate
                        and figures["repetition"] <= settings.gate_max_repetition
                        and figures["mean_length"] / figures["incumbent_mean_length"] <= settings.gate_max_length_ratio)
    failed = [name for name in GATES_BEFORE_ISSUE_22 if not gates[name]["passed"]] + ([] if old_degeneration else ["degeneration"])
    return {"passed": not failed, "failed": failed}


class StandInEngine:
    """An `Engine` (serving/engine.py) for tests of the HTTP layer where generation is not under test:
    it answers in the OpenAI shape, streamed or not, with words taken from the prompt, and loads
    adapters by name (`broken` versions fail). The real engine is in the chat, hot-swap and e2e tests."""

    def __init__(self) -> None:
        self.adapters: dict[str, int] = {}
        self.broken: set[str] = set()
        self.attempts: list[str] = []
        self.requests: list = []

    async def chat(self, body, request):
        from vllm.entrypoints.openai.chat_completion.protocol import (ChatCompletionResponse,
                                                                      ChatCompletionResponseChoice, ChatMessage,
                                                                      UsageInfo)
        self.requests.append(body)
        prompt = " ".join(str(m.get("content") if isinstance(m, dict) else m.content) for m in body.messages)
        limit = body.max_completion_tokens or body.max_tokens or 16
        words = (f"About {prompt}: " * 8).split()
        texts = [" ".join(words[i:i + limit]) for i in range(body.n or 1)]
        finish = "length" if len(words) > limit else "stop"
        usage = UsageInfo(prompt_tokens=len(prompt.split()), completion_tokens=sum(len(t.split()) for t in texts),
                          total_tokens=len(prompt.split()) + sum(len(t.split()) for t in texts))
        if not body.stream:
            return ChatCompletionResponse(id=f"chatcmpl-{body.request_id}", model=body.model, usage=usage, choices=[
                ChatCompletionResponseChoice(index=i, message=ChatMessage(role="assistant", content=text),
                                             finish_reason=finish) for i, text in enumerate(texts)])

        async def chunks():
            import json
            for i, text in enumerate(texts):
                for word in text.split():
                    delta = {"index": i, "delta": {"content": word + " "}, "finish_reason": None}
                    yield f"data: {json.dumps({'id': body.request_id, 'object': 'chat.completion.chunk', 'choices': [delta]})}\n\n"
                done = {"index": i, "delta": {}, "finish_reason": finish}
                yield f"data: {json.dumps({'id': body.request_id, 'object': 'chat.completion.chunk', 'choices': [done]})}\n\n"
            yield f"data: {json.dumps({'id': body.request_id, 'choices': [], 'usage': usage.model_dump()})}\n\n"
            yield "data: [DONE]\n\n"
        return chunks()

    async def models(self) -> dict:
        names = ["rlhf-loop", *self.adapters]
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "rlhf-loop"} for name in names]}

    async def load_adapter(self, name: str, path: str) -> int:
        from serving.engine import AdapterLoadError

        version = name.rsplit("@", 1)[1]
        self.attempts.append(version)
        if version in self.broken:
            raise AdapterLoadError(f"cannot load {version}")
        self.adapters[name] = len(self.adapters) + 1
        return self.adapters[name]

    async def unload_adapter(self, name: str, engine_id: int) -> None:
        self.adapters.pop(name, None)


def stand_in_engine(engine: StandInEngine | None = None):
    """An EngineStarter for `create_app` that starts `engine` (a fresh StandInEngine by default)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def start(settings, state):
        yield engine or StandInEngine()
    return start


# -- the learners' held-out check: answers to prompts no learner trained on, scored by the rule's reward model --
LEARNER_TOPICS = ["rivers", "owls", "bread", "chess", "jazz", "tea", "maps", "bees", "kites", "coral", "deserts", "robots"]
# short answers end inside the token budget, so how an answer ends (the hidden rule) is learnable
LEARNER_PROMPTS = [(("user", f"In one short sentence, what are {t}?"),) for t in LEARNER_TOPICS]
LEARNER_TRAIN, LEARNER_HELD_OUT = LEARNER_PROMPTS[:8], LEARNER_PROMPTS[8:]
HELD_OUT_MAX_TOKENS = 40


def held_out_scores(rollouts, scorer, adapter: Path | None, samples: int = 16):
    """The reward model's scores of `samples` answers per held-out prompt, sampled at temperature 1 (seed 11)."""
    prompts = LEARNER_HELD_OUT * samples
    outputs = rollouts.generate([[{"role": role, "content": text} for role, text in p] for p in prompts],
                                adapter=adapter, max_tokens=HELD_OUT_MAX_TOKENS, temperature=1.0, seed=11)
    return scorer.score(prompts, [o.text for o in outputs])


def assert_held_out_reward_rises_within_kl(trainer, rollouts, scorer, before, eval_dir: Path, kl_budget: float) -> None:
    """The reward model's score of a policy learner's held-out answers rises over the base model's (`before`),
    beyond the noise of sampling them (one-sided Welch p < 0.05), and its KL to the reference stays in budget."""
    from learner.stats import welch_greater

    after = held_out_scores(rollouts, scorer, trainer.save_adapter(eval_dir))
    kl = trainer.measured_kl(LEARNER_HELD_OUT, samples=4)
    p_value = welch_greater(after.tolist(), before.tolist())
    assert after.mean() > before.mean() and p_value < 0.05, (before.mean().item(), after.mean().item(), p_value)
    assert 0.0 <= kl < kl_budget, kl


def sampled_kl(trainer, rollouts, eval_dir: Path, samples: int = 4) -> float:
    """An offline learner's mean sequence KL (k1) to the reference on its own answers to the held-out prompts,
    sampled by vLLM at temperature 1 (what the KL gate measures)."""
    import torch

    prompts = LEARNER_HELD_OUT * samples
    outputs = rollouts.generate([[{"role": role, "content": text} for role, text in p] for p in prompts],
                                adapter=trainer.save_adapter(eval_dir), max_tokens=HELD_OUT_MAX_TOKENS, temperature=1.0, seed=13)
    with torch.no_grad():
        answers = [o.text for o in outputs]
        return (trainer.logprobs(prompts, answers) - trainer.logprobs(prompts, answers, reference=True)).mean().item()


def held_out_preference(trainer, pairs: list[Pair]) -> tuple[float, float]:
    """An offline learner on held-out pairs: (one-sided binomial p-value that it prefers the chosen answer over
    the rejected one more than the reference does, mean |log-ratio| of the answers to the reference)."""
    import torch
    from scipy.stats import binomtest

    with torch.no_grad():
        prompts, answers = [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
        ratio = trainer.logprobs(prompts, answers) - trainer.logprobs(prompts, answers, reference=True)
    prefers = int((ratio[: len(pairs)] > ratio[len(pairs):]).sum())
    return binomtest(prefers, len(pairs), alternative="greater").pvalue, ratio.abs().mean().item()

