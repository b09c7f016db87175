"""DeepSpeed ZeRO-3 on CPU (real DeepSpeed, gloo, one process): a reasoner is never partitioned; the
ZeRO-3 config trains the recipe. The offload config (configs/accelerate/zero3_offload.yaml, the README's
one-GPU launch) runs in tests/test_gpu.py on a GPU: on CPU its DeepSpeedCPUAdam is compiled at first
use, 3 CPU-minutes of `make test` on 2 cores for a path the GPU test covers as shipped."""

import os
import re
import textwrap

import pytest

from helpers import PYTHON, free_port, run_logged, tiny_launch

pytest.importorskip("deepspeed")

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import deepspeed
    from racro_trl.compat import skip_deepspeed_shm_op
    skip_deepspeed_shm_op()  # as the recipe does
    deepspeed.init_distributed(dist_backend="gloo")
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
    from racro_trl.reasoning.reasoners import Sampling, build_reasoner

    model = sys.argv[1]
    config = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1}
    keep = HfDeepSpeedConfig(config)  # what accelerate registers for a ZeRO-3 policy
    assert is_deepspeed_zero3_enabled()
    plain = AutoModelForCausalLM.from_pretrained(model).model.embed_tokens.weight
    print("PLAIN", tuple(plain.shape), hasattr(plain, "ds_id"))
    reasoner = build_reasoner("transformers", model)
    weight = reasoner.model.model.embed_tokens.weight
    print("REASONER", tuple(weight.shape), hasattr(weight, "ds_id"))
    print("ANSWER", reasoner.generate([[{"role": "user", "content": "hi"}]], 2, Sampling(max_tokens=4)).texts)
    assert is_deepspeed_zero3_enabled(), "the policy's ZeRO-3 registration is restored"
    with deepspeed.zero.Init(config_dict_or_path=config):
        try:
            build_reasoner("transformers", model)
            print("INSIDE built")
        except RuntimeError as error:
            print("INSIDE refused:", error)
    """
)


@pytest.mark.slow
def test_reasoner_outside_zero3(tiny_models, tmp_path):
    script = tmp_path / "zero3_probe.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    code, log = run_logged(
        [PYTHON, str(script), str(tiny_models["reasoner"])], tmp_path / "probe.log", 600, env
    )
    assert code == 0, log[-3000:]
    assert "deepspeed_shm_comm" not in log, "DeepSpeed built its CPU shm op (80 s)"
    lines = dict(
        line.split(" ", 1)
        for line in log.splitlines()
        if line.split(" ", 1)[0] in {"PLAIN", "REASONER", "INSIDE", "ANSWER"}
    )
    assert lines["PLAIN"] == "(0,) True", "without the guard ZeRO-3 partitions the model (the test can fail)"
    assert lines["REASONER"] == "(1001, 128) False", "the reasoner keeps whole 2-D weights"
    assert lines["INSIDE"].startswith("refused: a reasoner is being built inside DeepSpeed zero.Init")
    assert lines["ANSWER"].startswith("[[")


@pytest.mark.slow
def test_zero3_recipe_trains(tiny_models, sample_data, tmp_path):
    """configs/accelerate/zero3.yaml as shipped (one CPU process): the policy partitioned, the reasoner
    built outside zero.Init at the first reward, the weights updated by the gradient and saved whole."""
    import torch
    from safetensors.torch import load_file

    out_dir = tmp_path / "zero3"
    command = tiny_launch(
        "configs/accelerate/zero3.yaml", tiny_models, out_dir, "--dataset_name", str(sample_data),
        "--max_steps", "3", "--save_strategy", "no", "--weight_decay", "0",  # only a gradient moves weights
        "--reasoner_backend", "transformers",  # a transformers reasoner is what zero.Init would partition
    )  # fmt: skip
    code, log = run_logged(command, tmp_path / "zero3.log", timeout=900)
    assert code == 0, log[-8000:]
    assert "policy parameters partitioned by ZeRO-3: True" in log
    assert "deepspeed_shm_comm" not in log, "DeepSpeed built its CPU shm op (80 s)"
    assert re.search(r"transformers reasoner: \d+ parameters, ZeRO-3 partitioned: False", log), log[-3000:]
    before = load_file(tiny_models["policy"] / "model.safetensors")
    after = load_file(out_dir / "model.safetensors")
    assert before.keys() == after.keys() and all(before[k].shape == after[k].shape for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before), "the optimizer updated the policy"
