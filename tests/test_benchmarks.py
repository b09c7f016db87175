"""Benchmark files: download from a published URL with its MD5 (a local HTTP server stands in for
VLMEvalKit's), clear errors offline; `racro table` merges finished evaluations into the paper's layout."""

import functools
import hashlib
import http.server
import json
import threading

import pytest

from helpers import free_port
from racro_trl.evaluation.benchmarks import PAPER_BENCHMARKS, DownloadError, benchmark_file
from racro_trl.tools.cli import main

TSV = b"index\tquestion\tanswer\timage\n1\tHow many?\t3\taGVsbG8=\n"


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (base URL, the paths requested)."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "Bench.tsv").write_bytes(TSV)
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "www"))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requested
    httpd.shutdown()


def test_missing_file_is_downloaded_and_checked(server, tmp_path):
    url, requested = server
    published = {"Bench": (f"{url}/Bench.tsv", hashlib.md5(TSV).hexdigest())}
    path = benchmark_file("Bench", tmp_path / "data", published)
    assert path == tmp_path / "data" / "Bench.tsv" and path.read_bytes() == TSV
    assert benchmark_file("Bench", tmp_path / "data", published) == path  # present: not fetched again
    assert requested == ["/Bench.tsv"]


def test_checksum_mismatch_writes_nothing(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="not the published 0123"):
        benchmark_file("Bench", tmp_path / "data", {"Bench": (f"{url}/Bench.tsv", "0123" + "0" * 28)})
    assert list((tmp_path / "data").iterdir()) == []


def test_offline_and_unknown_errors_name_the_file_and_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/Bench.tsv"  # nothing listens there
    with pytest.raises(DownloadError) as error:
        benchmark_file("Bench", tmp_path, {"Bench": (url, "")}, timeout=5)
    assert str(tmp_path / "Bench.tsv") in str(error.value) and url in str(error.value)
    assert not (tmp_path / "Bench.tsv.part").exists()
    with pytest.raises(DownloadError, match="no published URL.*MathVista_MINI"):
        benchmark_file("Mine", tmp_path)
    assert PAPER_BENCHMARKS == [
        "MathVista_MINI", "MathVerse_MINI_Vision_Only", "MathVision_MINI", "WeMath", "LogicVista", "DynaMath",
    ]  # fmt: skip


def summary(benchmark, mllm, reasoner, accuracy, mode="full"):
    return {"benchmark": benchmark, "mode": mode, "mllm": mllm, "reasoner": reasoner, "accuracy": accuracy,
            "samples": 10, "failed": 0, "scoring": "rule"}  # fmt: skip


def test_racro_table_merges_runs(tmp_path, capsys):
    """A base captioner's run and a CRO checkpoint's, each its own `racro eval --out`, in one table."""
    runs = {
        "base": [summary("WeMath", "base", "r1", 40.0), summary("MathVista_MINI", "base", "r1", 50.0)],
        "cro": [summary("MathVista_MINI", "cro", "r1", 60.0)],
    }
    for folder, summaries in runs.items():
        for s in summaries:
            path = tmp_path / folder / s["benchmark"] / f"{s['benchmark']}_full_x_summary.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(s))
    assert main(["table", str(tmp_path / "base"), str(tmp_path / "cro"), "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t" / "results_table.md").read_text()
    assert (
        "| captioner | reasoner | mode | MathVista_MINI | WeMath | Avg | scoring |" in md
    )  # the paper's order
    assert "| base | r1 | full | 50.0 | 40.0 | 45.0 | rule |" in md
    assert "| cro | r1 | full | 60.0 | - | 60.0* | rule |" in md  # * averaged over what the row has
    assert (tmp_path / "t" / "results_table.csv").read_text().splitlines()[
        1
    ] == "base,r1,full,50.0,40.0,45.0,rule"
    assert (tmp_path / "t" / "results_table.png").stat().st_size > 0
    assert main(["table", str(tmp_path / "nothing-here")]) == 2
    assert "nothing-here is not a folder of racro eval results" in capsys.readouterr().err
