"""The run lifecycle end to end: reproducible runs, exact resume after kill -9, inputs and config kept on resume,
no run directory left by a failed set-up."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from pointseg.build import TrainInputs
from pointseg.cli import main
from pointseg.config import load_settings
from pointseg.workflows.train import run_training


def cli_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def spawn(*args: str) -> subprocess.Popen:
    """``pointseg`` in a process of its own (its own torch, its own start-up random state)."""
    return subprocess.Popen([sys.executable, "-m", "pointseg.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONHASHSEED": "random"})


def finish(proc: subprocess.Popen) -> None:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def losses(run):
    return [(x["step"], x["loss"]) for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def weights(run):
    return torch.load(run / "model.pt", weights_only=False)["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def points(tmp_path, tiny_loveda):
    path = tmp_path / "points.json"
    assert main(["points", "simulate", "--data-root", str(tiny_loveda), "--per-image", "10", "--out", str(path)]) == 0
    return path


def test_two_processes_with_the_same_seed_train_the_same_run(tmp_path, tiny_loveda, tiny_overrides, points):
    common = ["train", "--data-root", str(tiny_loveda), "--points", str(points), *cli_args(tiny_overrides)]
    procs = [spawn(*common, "--out", str(tmp_path / name), *extra)
             for name, extra in (("a", []), ("b", []), ("c", ["--set", "seed=1"]))]
    for proc in procs:
        finish(proc)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert losses(tmp_path / "a") != losses(tmp_path / "c"), "another seed, another run"
    # and in this process, after other work, the same again
    torch.rand(10)
    assert main([*common, "--out", str(tmp_path / "d")]) == 0
    assert same_weights(weights(tmp_path / "a"), weights(tmp_path / "d"))


def test_kill_9_at_a_random_step_then_resume_equals_the_run_never_stopped(tmp_path, tiny_loveda, tiny_overrides):
    overrides = [*tiny_overrides, "train.steps=120", "train.log_every=1", "train.checkpoint_every=7",
                 "data.crop=48", "train.batch_size=4"]
    common = ["train", "--data-root", str(tiny_loveda), *cli_args(overrides)]
    kill_after = random.Random().randint(10, 80)  # a different step each time the test runs
    proc = spawn(*common, "--out", str(tmp_path / "cut"))
    metrics = tmp_path / "cut" / "metrics.jsonl"
    while proc.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= kill_after):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "killed mid-run, not finished"
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole"), f"killed after step {kill_after}"
    assert same_weights(weights(tmp_path / "cut"), weights(tmp_path / "whole"))


class Stop(Exception):
    pass


def stop_at(step):
    def on_step(done):
        if done == step:
            raise Stop
    return on_step


@pytest.mark.parametrize("method", ["supervised", "fixmatch"])
def test_resume_without_inputs_keeps_the_points_and_continues_exactly(tmp_path, tiny_loveda, tiny_overrides, points,
                                                                      method):
    overrides = [*tiny_overrides, "train.steps=6", f"method.name={method}", "method.fixmatch.ema_decay=0.9"]
    inputs = TrainInputs(tiny_loveda, points)
    with pytest.raises(Stop):
        run_training(load_settings(None, overrides), tmp_path / "cut", inputs, on_step=stop_at(5))
    # the README's resume command: no --data-root, no --points
    assert main(["train", "--out", str(tmp_path / "cut"), "--resume"]) == 0
    run_training(load_settings(None, overrides), tmp_path / "whole", inputs)
    assert same_weights(weights(tmp_path / "cut"), weights(tmp_path / "whole"))
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")
    info = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert [i["from_step"] for i in info["invocations"]] == [0, 4], "each invocation recorded, none overwritten"
    assert info["invocations"][1]["argv"][-1] == "--resume"
    assert info["invocations"][1]["device"] == "cpu" and info["invocations"][1]["amp"] is False  # tiny runs: fp32
    assert info["invocations"][1]["precision"] == "float32" and info["invocations"][1]["cpu"]
    assert info["inputs"]["points"]["path"] == str(points.resolve())


def test_resumed_inputs_and_config_must_match_the_run(tmp_path, tiny_loveda, tiny_overrides, points, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--points", str(points), "--out", str(run),
                 *cli_args(tiny_overrides)]) == 0
    resume = ["train", "--out", str(run), "--resume"]

    other = tmp_path / "other.json"
    other.write_text(points.read_text())
    assert main([*resume, "--points", str(other)]) == 2
    assert "was started with --points" in capsys.readouterr().err
    assert main([*resume, "--data-root", str(tmp_path)]) == 2
    assert "was started with --data-root" in capsys.readouterr().err
    assert main([*resume, "--set", "model.name=unet-mobilenetv2", "--set", "loss.name=focal"]) == 2
    err = capsys.readouterr().err
    assert "model.name='unet-mobilenetv2' (the run has 'unet-small')" in err and "loss.name='focal'" in err
    assert main([*resume, "--labeled", str(points)]) == 2
    assert "was started with --labeled (none)" in capsys.readouterr().err

    doc = json.loads(points.read_text())
    doc["images"]["Rural/0"]["points"].pop()
    points.write_text(json.dumps(doc))
    assert main(resume) == 2
    assert f"{points.resolve()}: changed since the run" in capsys.readouterr().err
    points.unlink()
    assert main(resume) == 2
    assert "not found; the run" in capsys.readouterr().err

    assert len(json.loads((run / "run.json").read_text())["invocations"]) == 1, "refused resumes record nothing"


def test_resume_may_extend_the_run(tmp_path, tiny_loveda, tiny_overrides):
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *cli_args(tiny_overrides)]) == 0
    assert main(["train", "--out", str(run), "--resume", "--set", "train.steps=6", "--set", "train.threads=1"]) == 0
    assert [s for s, _ in losses(run)] == [2, 4, 6]
    assert "steps: 6" in (run / "config.yaml").read_text()


def test_resume_needs_a_run_and_a_new_run_needs_data(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "typo"), "--resume"]) == 2
    assert "no run to resume here" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "new")]) == 2
    assert "--data-root (or --raster) is required to start a run" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists() and not (tmp_path / "new").exists()


def test_a_failed_set_up_leaves_nothing_and_the_retry_runs(tmp_path, tiny_loveda, tiny_overrides, capsys,
                                                           monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "run"), *cli_args(tiny_overrides)]
    assert main([*args, "--set", "train.device=cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(args) == 0


def test_a_run_that_fails_before_its_first_checkpoint_is_removed(tmp_path, tiny_loveda, tiny_overrides, capsys):
    (tiny_loveda / "Train" / "Rural" / "images_png" / "2.png").write_bytes(b"not a png")  # found when first read
    args = ["train", "--data-root", str(tiny_loveda), "--out", str(tmp_path / "run"), *cli_args(tiny_overrides)]
    assert main(args) == 2
    assert "2.png: unreadable image" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()
    assert main([*args[:-len(cli_args(tiny_overrides)) - 2], "--out", str(tmp_path / "mine"),
                 *cli_args(tiny_overrides)]) == 2
    assert (tmp_path / "mine").is_dir() and not list((tmp_path / "mine").iterdir()), "a folder the user made stays"


def test_a_run_being_trained_cannot_be_trained_twice(tmp_path, tiny_loveda, tiny_overrides, capsys):
    import fcntl

    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *cli_args(tiny_overrides)]) == 0
    with open(run / ".lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # as the process training it holds it
        assert main(["train", "--out", str(run), "--resume", "--set", "train.steps=6"]) == 2
    assert "another pointseg process is training this run" in capsys.readouterr().err


def test_runs_saved_with_flat_method_keys_still_load_and_resume(tmp_path, tiny_loveda, tiny_overrides):
    """Runs made before each method had its own config section (``method.threshold``, not
    ``method.fixmatch.threshold``) load for prediction and resume with their settings."""
    import torch
    import yaml

    from pointseg import runs

    sets = [a for o in [*tiny_overrides, "method.name=fixmatch", "method.fixmatch.threshold=0.7"]
            for a in ("--set", o)]
    run = tmp_path / "old"
    assert main(["train", "--data-root", str(tiny_loveda), "--out", str(run), *sets]) == 0

    def flatten_method(cfg: dict) -> dict:
        method = cfg["method"]
        return {**cfg, "method": {k: v for k, v in method.items() if not isinstance(v, dict)}
                | {k: v for sub in method.values() if isinstance(sub, dict) for k, v in sub.items()}}

    state = torch.load(run / "model.pt", weights_only=False)
    state["config"] = flatten_method(state["config"])
    assert state["config"]["method"]["threshold"] == 0.7
    torch.save(state, run / "model.pt")
    saved = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump(flatten_method(saved), sort_keys=False))

    assert runs.load_run(run).cfg["method"]["fixmatch"]["threshold"] == 0.7
    assert main(["train", "--out", str(run), "--resume", "--set", "train.steps=6"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["fixmatch"]["threshold"] == 0.7
