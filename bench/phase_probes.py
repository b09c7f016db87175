"""Probes for `bench/cro_step.py`: each vLLM phase against standalone vLLM on the same batch, and a
kernel profile of the training passes (backward + optimizer)."""

from __future__ import annotations

import time


def _synchronized(fn):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def timed(times: dict, key: str, fn):
    """``fn`` that appends each call's synchronized wall time to ``times[key]``."""

    def wrapper(*args, **kwargs):
        out, seconds = _synchronized(lambda: fn(*args, **kwargs))
        times[key].append(seconds)
        return out

    return wrapper


def _cold(llm) -> None:
    """Forgets what the in-step call left cached (prompt prefixes, image features, processed images), so
    that the standalone run recomputes what the step computed."""
    llm.reset_prefix_cache()
    reset_processed = getattr(llm, "reset_mm_cache", None)  # not every vLLM version has it
    if reset_processed is not None:
        reset_processed()
    reset_encoder = getattr(llm.llm_engine, "reset_encoder_cache", None)
    if reset_encoder is not None:
        reset_encoder()


def _output_tokens(outputs) -> int:
    return sum(len(c.token_ids) for out in outputs for c in out.outputs)


class Standalone:
    """Records the last batch each vLLM engine was given inside the step (TRL's colocated policy engine,
    the reasoner's engine) and, after training, runs that same batch straight through the same engine:
    the in-step phase's tokens/s as a ratio to standalone vLLM on the same model, shape and batch.

    The in-step figures count the whole phase: for sampling, TRL's prompt preparation and the weight
    sync (timed apart, ``sync_s``); for the reward, the reasoner's prompt rendering and the grading."""

    def __init__(self, trainer, reward, times: dict):
        self.times, self.reward = times, reward
        self.llm = trainer.vllm_generation.llm
        self.policy_generate = self.llm.generate
        self.policy_call = self.reasoner_call = self.reasoner_answers = None
        self.ratios: dict[str, float] = {}
        generate = timed(times, "policy_vllm", self.policy_generate)

        def recorded(*args, **kwargs):
            self.policy_call = (args, kwargs)
            out = generate(*args, **kwargs)
            self.policy_tokens = _output_tokens(out)
            return out

        self.llm.generate = recorded
        ask = reward._ask

        def asked(captions, question, sampling):
            answers = ask(captions, question, sampling)
            self.reasoner_call = (captions, list(question), sampling)
            self.reasoner_answers = answers
            return answers

        reward._ask = asked
        trainer.vllm_generation.sync_weights = timed(times, "sync", trainer.vllm_generation.sync_weights)

    def report(self) -> list[str]:
        """Runs the recorded batches again, standalone, and returns the table's lines."""
        from racro_trl.reasoning import prompts as P

        lines = [f"{'phase':<18} {'in-step tok/s':>13} {'standalone tok/s':>16} {'ratio':>6} {'tokens':>7}"]

        def line(key, name, tokens, seconds, standalone_tokens, standalone_seconds):
            ours, alone = tokens / seconds, standalone_tokens / standalone_seconds
            self.ratios[key] = ours / alone
            lines.append(f"{name:<18} {ours:>13,.0f} {alone:>16,.0f} {ours / alone:>6.3f} {tokens:>7}")

        print("standalone: the policy's last batch again, straight through its vLLM engine", flush=True)
        args, kwargs = self.policy_call
        _cold(self.llm)
        outputs, alone = _synchronized(lambda: self.policy_generate(*args, **kwargs))
        tokens = self.policy_tokens
        line(
            "sampling", "policy sampling", tokens, self.times["generate"][-1], _output_tokens(outputs), alone
        )
        line(
            "sampling_vllm_call",
            " (vLLM call only)",
            tokens,
            self.times["policy_vllm"][-1],
            _output_tokens(outputs),
            alone,
        )
        captions, question, sampling = self.reasoner_call
        reasoner = self.reward.reasoner
        chats = [P.reasoner_reward_messages(c, q) for c, q in zip(captions, question, strict=True)]
        params = reasoner.sampling_params(len(chats), self.reward.num_samples, sampling)
        rendered = reasoner.prompts(chats)
        print("standalone: the reasoner's last batch again, straight through its vLLM engine", flush=True)
        _cold(reasoner.llm)
        outputs, alone = _synchronized(lambda: reasoner.llm.generate(rendered, params, use_tqdm=False))
        answered = self.reasoner_answers.tokens
        line(
            "reward", "reward (reasoner)", answered, self.times["reward"][-1], _output_tokens(outputs), alone
        )
        lines.append(f"weight sync (policy -> its vLLM engine): {self.times['sync'][-1]:.2f} s of the step")
        return lines


KERNEL_KINDS = (  # (kind, substrings of CUDA kernel names), first match wins
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_")),
    ("attention", ("flash", "fmha", "attention", "efficient_attention")),
    ("optimizer", ("adam", "multi_tensor", "lamb")),
    ("copy / fill", ("memcpy", "memset", "copy", "fill", "cat_", "catarray")),
    ("softmax / reduce", ("softmax", "reduce", "log_softmax", "norm")),
)


class KernelProfile:
    """torch.profiler over the training passes of the step named: from the end of scoring (log-probs)
    to the end of the step, i.e. the backward + optimizer phase. Reports how much of that wall time
    the GPU ran kernels, and those kernels' time by kind."""

    def __init__(self, trainer, step: int):
        self.step, self.profiler, self.lines = step, None, []
        score = trainer._generate_and_score_completions

        def scored(*args, **kwargs):
            out = score(*args, **kwargs)
            if trainer.state.global_step + 1 == self.step and self.profiler is None:
                from torch.profiler import ProfilerActivity, profile

                _synchronized(lambda: None)
                self.profiler = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
                self.profiler.__enter__()
                self.start = time.perf_counter()
            return out

        trainer._generate_and_score_completions = scored

    def stop(self) -> None:
        """Called at the end of every step; stops and summarises on the profiled one."""
        if self.profiler is None or self.lines:
            return
        from torch.autograd import DeviceType

        _synchronized(lambda: None)
        wall = time.perf_counter() - self.start
        self.profiler.__exit__(None, None, None)
        kernels = [e for e in self.profiler.events() if e.device_type == DeviceType.CUDA]
        by_kind: dict[str, float] = {}
        by_name: dict[str, float] = {}
        for e in kernels:
            seconds = e.time_range.elapsed_us() / 1e6
            name = e.name.lower()
            kind = next((k for k, keys in KERNEL_KINDS if any(s in name for s in keys)), "other elementwise")
            by_kind[kind] = by_kind.get(kind, 0.0) + seconds
            by_name[e.name] = by_name.get(e.name, 0.0) + seconds
        busy = sum(by_kind.values())
        self.lines = [
            f"profiled step {self.step}, backward + optimizer: {wall:.1f} s wall, GPU kernels {busy:.1f} s "
            f"({100 * busy / wall:.0f}% of the wall time), {len(kernels)} kernels",
            *(f"  {k:<18} {s:>7.2f} s  {100 * s / wall:>4.0f}% of wall" for k, s in sorted(by_kind.items(), key=lambda x: -x[1])),
            "  top kernels:",
            *(f"    {s:>7.2f} s  {n[:110]}" for n, s in sorted(by_name.items(), key=lambda x: -x[1])[:12]),
        ]  # fmt: skip
