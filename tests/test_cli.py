"""The one error mechanism of the ``stqa`` command line: one line per error, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stqa import cli

COUNT_HEADER = "gif_name\tquestion\tanswer\tvid_id\tkey"


@pytest.fixture
def bad_annotations(tmp_path: Path) -> Path:
    """A test split whose row 3 opens a quote that row 5 closes (used to merge into one record)."""
    rows = [COUNT_HEADER] + [f"g{i}\tq{i} ?\t3\tCOUNT{i}\t{i}" for i in range(1, 7)]
    rows[2] = 'g2\t"how many times ?\t3\tCOUNT2\t2'
    rows[4] = 'g4\tq4 " ?\t3\tCOUNT4\t4'
    (tmp_path / "Test_count_question.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    (tmp_path / "gifs").mkdir()
    return tmp_path


def _stqa(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stqa", *args], capture_output=True, text=True, timeout=300)


def test_evaluate_on_a_bad_annotation_file_is_one_line(bad_annotations: Path) -> None:
    result = _stqa("evaluate", "--data", str(bad_annotations), "--task", "count")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stqa evaluate: error: ")
    assert f"{bad_annotations / 'Test_count_question.csv'}:3: bad quoting" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(bad_annotations: Path, where: str) -> None:
    args = ["evaluate", "--data", str(bad_annotations), "--task", "count"]
    result = _stqa(*(["--debug", *args] if where == "before" else [*args, "--debug"]))
    assert result.returncode == 2
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "in _split" in result.stderr  # the frame that raised, inside the loader
    assert result.stderr.splitlines()[-1].startswith("stqa evaluate: error: ")


def test_systemexit_message_becomes_the_same_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # train stops on bad arguments with SystemExit("error: ..."): same format, status 2
    assert cli.main(["train", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "stqa train: error: --data is required (or --preset)\n"
    assert cli.main(["evaluate", "--data", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stqa evaluate: error: no test annotation files in ") and err.count("\n") == 1


def test_usage_errors_end_with_the_argparse_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "stqa evaluate: error: the following arguments are required: --data")


def _raising(exc: BaseException):
    def run(args) -> int:
        raise exc
    return run


def test_unexpected_exception_is_one_line_with_a_hint(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    import stqa.evaluation.command

    monkeypatch.setattr(stqa.evaluation.command, "run", _raising(TypeError("unsupported operand\nsecond line")))
    assert cli.main(["evaluate", "--data", "x"]) == 1
    assert capsys.readouterr().err == ("stqa evaluate: error: unexpected TypeError: unsupported operand ... "
                                       "(this is a bug; rerun with --debug for the traceback)\n")
    assert cli.main(["--debug", "evaluate", "--data", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err and "TypeError: unsupported operand" in err
    assert err.splitlines()[-1] == "stqa evaluate: error: unexpected TypeError: unsupported operand ..."


@pytest.mark.parametrize("exc, line", [
    (FileNotFoundError("videos directory /v does not exist"), "videos directory /v does not exist"),
    (ValueError(""), "ValueError"),  # never an empty message
])
def test_input_errors_of_every_subcommand(monkeypatch, capsys, exc: BaseException, line: str) -> None:
    import stqa.data.synth

    monkeypatch.setattr(stqa.data.synth, "run", _raising(exc))
    assert cli.main(["synth", "--out", "x"]) == 2
    assert capsys.readouterr().err == f"stqa synth: error: {line}\n"


def test_ctrl_c_and_explicit_exit_status(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    import stqa.data.synth

    monkeypatch.setattr(stqa.data.synth, "run", _raising(KeyboardInterrupt()))
    assert cli.main(["synth", "--out", "x"]) == 130
    assert capsys.readouterr().err == "stqa synth: interrupted\n"
    monkeypatch.setattr(stqa.data.synth, "run", _raising(SystemExit(3)))
    with pytest.raises(SystemExit) as info:  # a numeric status is the subcommand's choice: passed on
        cli.main(["synth", "--out", "x"])
    assert info.value.code == 3


def test_subcommands_that_print_their_own_line_keep_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["synth", "--videos", "3"]) == 2
    assert capsys.readouterr().err == "stqa synth: --out DIR is required (or --check DIR)\n"


def test_checkpoint_errors_are_input_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "Test_count_question.csv").write_text(f"{COUNT_HEADER}\n")
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "missing"), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stqa evaluate: error: ") and "does not exist" in err and err.count("\n") == 1


def test_a_mistyped_flag_shows_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["synth", "--out", "x", "--vidoes", "3"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: stqa synth") and "unrecognized arguments: --vidoes 3" in err
