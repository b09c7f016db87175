"""`make demo` shows what it is there to show: the known-harmless warnings of the CPU stack stay in its
log, and everything else reaches the terminal. A real child process prints them as the launch does
(Python's warnings module, with the source line under each; a progress bar; the reward table)."""

import sys
import textwrap

from racro_trl.tools.demo import run_quietly

CHILD = textwrap.dedent(
    """
    import sys, warnings
    MESSAGE = "TRL currently supports vLLM versions from 0.22.0 to 0.31.0. You have version 0.32.0"
    warnings.warn(MESSAGE)  # three places, as TRL's modules say it
    warnings.warn(MESSAGE)
    warnings.warn(MESSAGE)
    sys.stderr.flush()
    print("  3%|3         | 3/100 [00:09<03:40,  2.28s/it]{'loss': '0.001', 'grad_norm': '0.4'}", flush=True)
    warnings.warn("something new went wrong")
    sys.stderr.flush()
    print("Reward per step:")
    print("      step      reward")
    print("         1       0.875")
    """
)


def test_known_noise_stays_in_the_log_and_the_rest_reaches_the_terminal(tmp_path, capsys):
    (tmp_path / "child.py").write_text(CHILD)  # a file: Python prints a warning's source line from it
    code, hidden = run_quietly([sys.executable, str(tmp_path / "child.py")], {}, tmp_path / "launch.log")
    shown = capsys.readouterr().out
    log = (tmp_path / "launch.log").read_text()
    assert code == 0
    assert "TRL currently supports vLLM" in log and "TRL currently supports vLLM" not in shown
    assert "warnings.warn(" not in shown.split("something new")[0], "a filtered warning's source line shows"
    assert "{'loss'" not in shown and "  3%|3" in shown, "the step dict goes, the progress bar stays"
    assert "UserWarning: something new went wrong" in shown, "an unknown warning must reach the user"
    assert shown.count("warnings.warn(") == 1, "the unknown warning keeps its source line"
    assert "Reward per step:\n      step      reward\n         1       0.875" in shown
    assert hidden == 3 * 2 + 1  # three warnings with their source lines, one step dict
