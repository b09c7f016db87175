"""A wrong model path or config file stops a launch before the policy loads, in one line naming the
argument: real `accelerate launch` of the recipe and real `racro eval`, each within 20 s on 2 cores."""

import base64
import io
import time

import pytest
import yaml
from PIL import Image

from helpers import PYTHON, REPO, racro, run_logged
from racro_trl.training.launch_checks import check_model_reference

FAST = 20.0  # seconds: the bound for a launch that must fail (the recipe's imports take ~10 s)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A folder that passes the check (a config.json); no launch here gets as far as loading it."""
    folder = tmp_path_factory.mktemp("model")
    (folder / "config.json").write_text("{}")
    return folder


def launch(tmp_path, *extra: str, config: str = "configs/accelerate/single.yaml") -> tuple[int, str, float]:
    command = [
        PYTHON, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "1",
        "recipes/cro.py", "--config", "recipes/tiny/cro.yaml", "--output_dir", str(tmp_path / "out"), *extra,
    ]  # fmt: skip
    start = time.monotonic()
    code, output = run_logged(command, tmp_path / "launch.log", timeout=120)
    return code, output, time.monotonic() - start


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("recipes/cro.py: error:")]


@pytest.mark.parametrize(
    "argument, value, expected",
    [
        ("--model_name_or_path", "/no/such/policy", "model_name_or_path: /no/such/policy is neither a local "
         "model folder nor a Hub id"),
        ("--reasoner_model", "/path/that/does/not/exist", "reasoner_model: /path/that/does/not/exist is neither"),
        ("--reasoner_model", "recipes", "reasoner_model: recipes is a folder without a config.json"),
        ("--deepspeed", "configs/deepspeed/nope.json", "configs/deepspeed/nope.json"),
    ],
    ids=["policy", "reasoner", "folder-without-config", "deepspeed-flag"],
)  # fmt: skip
def test_a_wrong_reference_stops_the_launch_in_one_line(tmp_path, model_folder, argument, value, expected):
    extra = ["--model_name_or_path", str(model_folder), "--reasoner_model", str(model_folder)]
    code, output, seconds = launch(tmp_path, *extra, argument, value)
    assert code != 0
    assert [line for line in error_lines(output) if expected in line], output[-3000:]
    assert "Traceback" not in output.split("recipes/cro.py: error:")[0], "the line comes before any traceback"
    assert "Loading" not in output and "step" not in output.lower().split("error:")[0]
    assert seconds < FAST, f"failed after {seconds:.1f} s"


def test_a_missing_deepspeed_file_in_the_accelerate_config_stops_the_launch(tmp_path, model_folder):
    config = yaml.safe_load((REPO / "configs/accelerate/zero3.yaml").read_text())
    config["deepspeed_config"]["deepspeed_config_file"] = "configs/deepspeed/nope.json"
    (tmp_path / "zero3.yaml").write_text(yaml.safe_dump(config))
    extra = ["--model_name_or_path", str(model_folder), "--reasoner_model", str(model_folder)]
    code, output, seconds = launch(tmp_path, *extra, config=str(tmp_path / "zero3.yaml"))
    assert code != 0
    assert error_lines(output) == [
        "recipes/cro.py: error: deepspeed_config_file (accelerate config): configs/deepspeed/nope.json does not exist"
    ], output[-3000:]
    assert seconds < FAST, f"failed after {seconds:.1f} s"


def test_a_missing_accelerate_config_stops_the_launch(tmp_path):
    """accelerate reads its own config before the recipe starts; its message names the file."""
    code, output, seconds = launch(tmp_path, config="configs/accelerate/nope.yaml")
    assert code != 0 and "configuration file `configs/accelerate/nope.yaml` does not exist" in output
    assert seconds < FAST, f"failed after {seconds:.1f} s"


@pytest.mark.parametrize(
    "argument, value", [("--mllm", "/no/such/captioner"), ("--reasoner", "/no/such/reasoner")]
)
def test_racro_eval_checks_its_models_before_loading(tmp_path, model_folder, argument, value):
    tsv = tmp_path / "B.tsv"
    png = io.BytesIO()
    Image.new("RGB", (28, 28), "red").save(png, format="PNG")
    image = base64.b64encode(png.getvalue()).decode()
    tsv.write_text(f"index\tquestion\tanswer\timage\n1\tWhat colour?\tred\t{image}\n")
    models = {"--mllm": str(model_folder), "--reasoner": str(model_folder), argument: value}
    start = time.monotonic()
    out = racro("eval", "--benchmark", "B", "--data", str(tsv), *(x for kv in models.items() for x in kv),
                "--out", str(tmp_path / "out"))  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"racro eval: error: {argument}: {value} is neither a local model folder nor a Hub id (no such folder)"
    )
    assert time.monotonic() - start < FAST


def test_hub_ids_pass_and_paths_that_look_local_do_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-models").mkdir()
    check_model_reference("Qwen/Qwen2.5-VL-3B-Instruct", "x")
    check_model_reference("gpt2", "x")
    for path in ("tiny-models/reasonr", "./reasoner", "~/no-such-model", "a/b/c"):
        with pytest.raises(ValueError, match=f"x: {path} is neither"):
            check_model_reference(path, "x")
    (tmp_path / "weights.bin").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        check_model_reference("weights.bin", "x")
