"""`cotflow report`: the gathered table on hand-made artifact folders, the MLflow links
through the real client on a sqlite store, the command end to end, and the page as a
headless browser renders it."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from cotflow.config import read_params
from cotflow.records import write_json
from cotflow.report import (
    MISSING,
    ReportError,
    gather,
    levels,
    method_rows,
    pass_keys,
    series,
    stage_rows,
)
from cotflow.report_html import render, write_report
from cotflow.report_runs import RunLinks, find_runs, run_url
from tests.conftest import micro_params

UI = "http://127.0.0.1:5000"


def _metrics(step: int, acc: float, **extra: float) -> dict:
    return {"iteration": step, "accuracy": acc, "accuracy_difficulty_1": acc + 0.1,
            "accuracy_difficulty_2": acc - 0.1, "pass@1": acc / 2, "pass@10": acc,
            "pass@2": acc * 0.7, "mean_completion_tokens": 20.0 + step,
            "finished_fraction": 1.0, **extra}


def _workspace(root: Path, algorithms: list[str], folders: dict[str, dict]) -> Path:
    """params.yaml with one iteration per algorithm, and `folders`: folder -> {"metrics":
    metrics.json, STAGE: stats} (what each folder's stages left)."""
    raw = micro_params()
    raw["algorithms"]["<b>bold</b>"] = {"kind": "raft"}  # a name the page must escape
    raw["iterations"] = {f"{i:03d}": {"algorithm": a, "prev": "base" if i == 1 else
                                      f"iter-{i - 1:03d}"}
                         for i, a in enumerate(algorithms, start=1)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for folder, files in folders.items():
        for name, content in files.items():
            path = root / "artifacts" / folder / (
                "metrics.json" if name == "metrics" else f"stats/{name}.json")
            write_json(path, content)
    return root


def _four(root: Path) -> Path:
    """Warm start, two iterations done (RAFT with GVM's allocation, then Critique-GRPO), the
    third stopped after allocate, the fourth not run."""
    return _workspace(root, ["raft", "critique-grpo", "raft", "<b>bold</b>"], {
        "base": {"metrics": _metrics(0, 0.3), "data": {"train_problems": 600}},
        "iter-001": {"metrics": _metrics(1, 0.4),
                     "allocate": {"method": "gvm", "zero_share": 0.25, "samples": 64},
                     "critique": {"critiques": 0}, "judge": {"pairs": 0},
                     "train": {"loss": 0.5, "grad_norm": 1.5, "kl": 0.01,
                               "optimizer_steps": 4, "algorithm": "raft"}},
        "iter-002": {"metrics": _metrics(2, 0.5, inconsistency_rate=0.1),
                     "allocate": {"method": "uniform", "zero_share": 0.0, "samples": 64},
                     "critique": {"critiques": 8, "refinement_success_rate": 0.375},
                     "judge": {"pairs": 0},
                     "train": {"loss": 0.25, "optimizer_steps": 2, "algorithm": "critique-grpo",
                               "<script>alert(1)</script>": "<img src=x onerror=alert(2)>"}},
        "iter-003": {"allocate": {"method": "uniform", "zero_share": 0.0, "samples": 64}},
    })


def _gather(root: Path):
    return gather(read_params(root / "params.yaml"), root)


def test_gather_keeps_iterations_not_run(tmp_path):
    its = _gather(_four(tmp_path))
    assert [it.folder for it in its] == ["base", "iter-001", "iter-002", "iter-003", "iter-004"]
    assert [it.step for it in its] == [0, 1, 2, 3, 4]
    assert [it.algorithm for it in its] == ["warm start", "raft", "critique-grpo", "raft",
                                            "<b>bold</b>"]
    assert [it.status for it in its] == ["done", "done", "done", "stages done: allocate",
                                         "not run"]
    assert series(its, "metrics", "accuracy") == [0.3, 0.4, 0.5, None, None]
    assert series(its, "train", "loss") == [None, 0.5, 0.25, None, None]
    assert pass_keys(its) == ["pass@1", "pass@2", "pass@10"]  # by k, not as text
    assert levels(its, "accuracy") == [1, 2]
    assert its[0].stats == {"data": {"train_problems": 600}}


def test_method_metrics_only_where_the_method_reports_them(tmp_path):
    rows = dict(method_rows(_gather(_four(tmp_path))))
    # Uniform allocation's zero share is 0 by construction: GVM's iterations only.
    assert rows["GVM zero-variance share (prompts allotted no samples)"] == [
        None, 0.25, None, None, None]
    assert rows["Critique-GRPO refinement success (wrong answers refined to right)"] == [
        None, None, 0.375, None, None]
    assert rows["VerIPO inconsistency rate (held-out)"] == [None, None, 0.1, None, None]
    assert not any(label.startswith("TON") for label in rows)


def test_stage_tables_skip_stages_that_did_nothing(tmp_path):
    its = _gather(_four(tmp_path))[1:]
    assert stage_rows(its, "judge") == []  # pairs 0 everywhere
    assert stage_rows(its, "critique")  # one iteration critiqued
    train = dict(stage_rows(its, "train"))
    assert train["grad_norm"] == [1.5, MISSING, MISSING, MISSING]
    assert train["optimizer_steps"] == [4, 2, MISSING, MISSING]


def test_a_workspace_without_results_is_one_clear_error(tmp_path):
    root = _workspace(tmp_path, ["raft"], {})
    with pytest.raises(ReportError, match="artifacts: no such folder"):
        _gather(root)
    write_json(root / "artifacts" / "base" / "stats" / "data.json", {"train_problems": 6})
    with pytest.raises(ReportError, match=r"base/metrics\.json .*iter-001"):
        _gather(root)


def test_every_string_from_files_is_escaped(tmp_path):
    root = _four(tmp_path)
    its = _gather(root)
    page = render("<ws>", root, its, RunLinks("note <b>"), {"heldout": "heldout.png"})
    for raw in ("<script>", "<img src=x", "<b>bold</b>", "<ws>", "note <b>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "not run" in page and "stages done: allocate" in page


def test_no_store_no_links_and_none_created(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = _four(tmp_path)
    links = find_runs(read_params(root / "params.yaml"), root, UI)
    assert links.urls == {} and "no MLflow store" in links.note
    assert not (root / "mlflow.db").exists()


def test_links_to_each_iterations_current_run(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from cotflow.tracking import SUPERSEDED, start_parent

    root = _four(tmp_path).resolve()
    # What params.yaml's null uri means; set here since MLflow sets it (and would leave it).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    cfg = read_params(root / "params.yaml")
    parent = start_parent(cfg, root)
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name(cfg.tracking.experiment).experiment_id

    def child(key: str, algorithm: str, **tags: str) -> str:
        return client.create_run(exp_id, run_name=f"iter-{key}", tags={
            "mlflow.parentRunId": parent, "cotflow.iteration": key,
            "cotflow.algorithm": algorithm, **tags}).info.run_id

    first = child("001", "raft")
    child("001", "raft", **{SUPERSEDED: "later"})  # newer, but replaced since
    second = child("002", "critique-grpo")
    child("003", "grpo")  # another algorithm than params.yaml's now: not this iteration's
    links = find_runs(cfg, root, UI + "/")
    assert links.urls == {"base": run_url(UI, exp_id, parent),
                          "iter-001": f"{UI}/#/experiments/{exp_id}/runs/{first}",
                          "iter-002": run_url(UI, exp_id, second)}
    assert str(root / "mlflow.db") in links.note
    # params.yaml edited since (an iteration added): the workspace's runs still link.
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["iterations"]["005"] = {"algorithm": "raft", "prev": "iter-004"}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    edited = find_runs(read_params(root / "params.yaml"), root, UI)
    assert edited.urls["iter-002"] == links.urls["iter-002"]


def _cotflow(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the workspace's
    return subprocess.run([sys.executable, "-m", "cotflow", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_cli_writes_the_page_and_its_figures(tmp_path):
    root = _four(tmp_path / "ws")
    r = _cotflow(root, "report")
    assert r.returncode == 0, r.stderr
    page = root / "report" / "index.html"
    assert r.stdout.strip() == str(page)
    names = sorted(p.name for p in page.parent.iterdir())
    assert names == ["heldout.png", "index.html", "levels.png", "methods.png", "train.png"]
    assert all((page.parent / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names
               if n.endswith(".png"))
    html = page.read_text()
    assert 'src="heldout.png"' in html and "no MLflow store" in html
    # Again, elsewhere, with a UI base: an earlier report is replaced whole.
    out = tmp_path / "elsewhere"
    assert _cotflow(root, "report", "--out", str(out), "--mlflow-ui", "http://h:1").returncode == 0
    assert _cotflow(root, "report", "--out", str(out)).returncode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".elsewhere")]
    # Never onto a folder that holds anything else (here: the workspace itself).
    r = _cotflow(root, "report", "--out", str(root))
    assert r.returncode == 2 and "not a report folder" in r.stderr
    assert (root / "params.yaml").is_file()


def test_cli_without_artifacts_names_what_is_missing(tmp_path):
    root = _workspace(tmp_path / "ws", ["raft"], {})
    r = _cotflow(root, "report")
    assert r.returncode == 2
    assert "artifacts: no such folder" in r.stderr and "Traceback" not in r.stderr
    assert not (root / "report").exists()


class _Refs(HTMLParser):
    """Every element that makes a browser fetch something, with its address."""

    def __init__(self) -> None:
        super().__init__()
        self.fetched: list[tuple[str, str]] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        for name, val in attrs:
            if tag != "a" and name in ("src", "href", "srcset", "data") and val:
                self.fetched.append((tag, val))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install chromium; .ci/setup "
                           "does where apt-get exists)")
def test_page_renders_offline_in_a_headless_browser(tmp_path):
    from PIL import Image  # matplotlib's own dependency

    root = _four(tmp_path / "ws")
    page = write_report(root, tmp_path / "report", UI)
    refs = _Refs()
    refs.feed(page.read_text())
    assert refs.scripts == 0
    assert refs.fetched and all(not v.startswith(("http:", "https:", "//"))
                                for _, v in refs.fetched), refs.fetched
    assert all((page.parent / v).is_file() for tag, v in refs.fetched if tag == "img")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1400,1800", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert _png_size(shot) == (1400, 1800)
    with Image.open(shot) as im:
        colors = im.convert("RGB").getcolors(maxcolors=1 << 16)
    # Text, tables and plots: many colours, and white not everywhere.
    assert colors is None or len(colors) > 50
    assert shot.stat().st_size > 30_000
