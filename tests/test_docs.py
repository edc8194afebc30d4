"""Docs that run (issue 22, section 4): what README.md and docs/*.md tell a user to type is true.

- The README's ```python blocks run as written (in an empty directory).
- Every ``stqa`` command line in a ```bash/```sh/```console block is found automatically and parsed by the
  real parser (:func:`stqa.cli.build_parser`); ``stqa`` in inline code and in usage synopses must name a
  subcommand and flags that exist. ``make`` targets, ``python -m`` modules, script and repository paths and
  relative links must exist. Paths of the development tree (``../shared``) are never instructions.
- A scaled-down copy of each documented workflow runs for real, from the documented line itself: only sizes
  (``--videos``, ``--epochs``, model widths, frames) are overridden, files a user brings (TGIF-QA
  annotations and their features, ``clip.gif``) are replaced by small ones, and ``stqa ask`` is pointed at
  the port ``stqa serve`` bound. Documented lines that need what a test cannot have (ResNet or C3D weights,
  GPUs, hours of training, a browser) are only parsed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, TINY_TRAINING
from stqa.server.testing import ServeProcess

from stqa import cli
from stqa.cli import main as stqa_main

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*```(\S*)")
# Paths that exist only in the development tree (the shared TGIF-QA copy), never in a user's checkout.
DEV_TREE_PATH = re.compile(r"(?<![\w/])(?:\.\./|/work/)shared\b")
DEV_TREE_MARK = "development tree"
REPO_PATH = re.compile(r"(?<![\w./-])((?:scripts|benchmarks|tests|docs|stqa|server|csrc|protos|cmake)/[\w./{},:-]*)")
SHELL_OPERATORS = {";", "&&", "||", "|"}
REDIRECTIONS = {">", ">>", "2>", "2>&1", "<"}


# -- reading the docs ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snippet:
    """Text from a doc: a shell command (continuation lines joined), a line of another fenced block, an
    inline code span, or a whole python block."""

    doc: Path
    line: int
    text: str
    kind: str  # "shell" | "block" | "span" | "python"

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _fenced(doc: Path) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the first content line, lines) of each fenced block."""
    lang, start, body = None, 0, []
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if match and lang is None:
            lang, start, body = match.group(1).lower(), number + 1, []
        elif match:
            yield lang, start, body
            lang = None
        elif lang is not None:
            body.append(line)


def _prose(doc: Path) -> str:
    """The doc with every fenced block blanked out (line numbers kept)."""
    lines, in_block = [], False
    for line in doc.read_text().splitlines():
        fence = FENCE.match(line) is not None
        lines.append("" if in_block or fence else line)
        in_block ^= fence
    return "\n".join(lines)


@functools.cache
def snippets(doc: Path) -> tuple[Snippet, ...]:
    found: list[Snippet] = []
    for lang, start, body in _fenced(doc):
        if lang == "python":
            found.append(Snippet(doc, start, "\n".join(body), "python"))
            continue
        kind = "shell" if lang in SHELL_LANGUAGES else "block"
        pending, first = "", 0
        for offset, line in enumerate(body):
            if lang == "console":
                if not line.startswith("$ ") and not pending:
                    continue  # output, not a command
                line = line.removeprefix("$ ")
            if not pending:
                first = start + offset
            if kind == "shell" and line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            if text:
                found.append(Snippet(doc, first, text, kind))
    prose = _prose(doc)
    # a code span may wrap onto the next line of its paragraph, never across a blank line
    for match in re.finditer(r"`([^`\n]+(?:\n[^`\n]+)*)`", prose):
        found.append(Snippet(doc, prose.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split()), "span"))
    return tuple(found)


def all_snippets(*kinds: str) -> list[Snippet]:
    return [s for doc in DOCS for s in snippets(doc) if s.kind in kinds]


def commands(snippet: Snippet) -> list[list[str]]:
    """The simple commands of a shell line: comments, ``VAR=value`` prefixes and redirections dropped."""
    try:
        tokens = shlex.split(snippet.text, comments=True)
    except ValueError:  # an unbalanced quote in prose: split on blanks
        tokens = snippet.text.split()
    result, current, skip = [], [], False
    for token in tokens:
        if skip:
            skip = False
        elif token in SHELL_OPERATORS:
            result.append(current)
            current = []
        elif token in REDIRECTIONS:
            skip = token != "2>&1"
        elif not current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", token):
            continue
        else:
            current.append(token)
    result.append(current)
    return [c for c in result if c]


def stqa_argv(command: list[str]) -> list[str] | None:
    """The arguments after ``stqa`` (also ``python -m stqa``, ``torchrun ... -m stqa``), else None."""
    if Path(command[0]).name == "stqa":
        return command[1:]
    if Path(command[0]).name in {"python", "python3", "torchrun"} and "-m" in command:
        at = command.index("-m")
        if command[at + 1:at + 2] == ["stqa"]:
            return command[at + 2:]
    return None


def optional_variants(argv: list[str]) -> list[list[str]]:
    """A line with optional groups (``[--a x | --b]``) as the line without them and with each alternative."""
    base, groups, group = [], [], None
    for token in argv:
        if group is None and token.startswith("[-"):
            group, token = [[]], token[1:]
        if group is None:
            base.append(token)
            continue
        end = token.endswith("]")
        token = token.removesuffix("]")
        if token == "|":
            group.append([])
        elif token:
            group[-1].append(token)
        if end:
            groups.append(group)
            group = None
    return [base] + [base + alternative for g in groups for alternative in g]


def documented_commands() -> list[tuple[Snippet, list[str]]]:
    """Every ``stqa`` invocation in a shell block, with its optional groups expanded."""
    found = []
    for snippet in all_snippets("shell"):
        for command in commands(snippet):
            argv = stqa_argv(command)
            if argv is not None:
                found.extend((snippet, variant) for variant in optional_variants(argv))
    return found


# -- the real parser ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def stqa_parser(relaxed: bool = False) -> argparse.ArgumentParser:
    """``stqa``'s parser; ``relaxed`` for lines with ``...``, which stand for options shown elsewhere."""
    parser = cli.build_parser()
    if relaxed:
        for p in [parser, *(cli._subparser(parser, name) for name in cli.COMMANDS)]:
            for action in p._actions:
                if action.option_strings:
                    action.required = False
    return parser


def parse_error(argv: list[str]) -> str | None:
    """What ``stqa`` says about ``argv`` when its parser refuses it, else None."""
    relaxed = "..." in argv
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            stqa_parser(relaxed).parse_args([a for a in argv if a != "..."])
        except SystemExit as stop:
            if stop.code not in (0, None):  # --help and --version exit 0
                return err.getvalue().strip().splitlines()[-1]
    return None


def unknown_words(text: str) -> list[str]:
    """For ``stqa ...`` in prose or a usage synopsis (placeholders, alternatives): an unknown subcommand or
    an unknown ``--flag``."""
    parser = stqa_parser()
    words = text.split()[1:]
    command = next((w for w in words if not w.startswith(("-", "["))), None)
    known = set(parser._option_string_actions)
    if command is not None and re.fullmatch(r"[a-z]+", command):
        if command not in cli.COMMANDS:
            return [f"subcommand {command!r}"]
        known |= set(cli._subparser(parser, command)._option_string_actions)
    flags = [m.group(1) for w in words if (m := re.match(r"\[?(--[A-Za-z][\w-]*)", w))]
    return [f"flag {flag}" for flag in flags if flag not in known]


# -- keeping the commands true -----------------------------------------------------------------------------
COMMANDS = documented_commands()


def test_the_docs_show_every_subcommand():
    shown = {argv[0] for _, argv in COMMANDS if argv and not argv[0].startswith("-")}
    assert shown == set(cli.COMMANDS), f"documented: {sorted(shown)}"


@pytest.mark.parametrize(("snippet", "argv"), COMMANDS, ids=[f"{s.where}:{' '.join(a[:1])}" for s, a in COMMANDS])
def test_documented_stqa_command_parses(snippet: Snippet, argv: list[str]):
    error = parse_error(argv)
    assert error is None, f"{snippet.where}: `{' '.join(argv)}` is refused by the stqa parser: {error}"


def test_stqa_in_prose_and_synopses_names_real_subcommands_and_flags():
    problems = [f"{s}: unknown {w}" for s in all_snippets("span", "block")
                if s.text.startswith("stqa ") for w in unknown_words(s.text)]
    assert not problems, "\n".join(problems)


def _make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([\w.-]+(?:\s+[\w.-]+)*)\s*:(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets


def test_make_targets_exist():
    targets = _make_targets()
    lines = [(s, c[1:]) for s in all_snippets("shell", "span") for c in commands(s) if c[0] == "make"]
    assert lines, "no make line found in the docs"
    missing = [f"{s}: no target {t!r} in the Makefile" for s, names in lines for t in names
               if not t.startswith("-") and "=" not in t and t not in targets]
    assert not missing, "\n".join(missing)


def _named_files(snippet: Snippet) -> Iterator[str]:
    """``python -m MODULE`` and ``python SCRIPT`` of a line, as ``module:NAME`` / paths."""
    for command in commands(snippet):
        if Path(command[0]).name not in {"python", "python3"}:
            continue
        if "-m" in command:
            yield f"module:{command[command.index('-m') + 1]}"
        elif "-c" not in command:
            yield from (a for a in command[1:2] if a.endswith(".py"))


def _expand_braces(path: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", path)
    if match is None:
        return [path]
    return [p for alt in match.group(1).split(",")
            for p in _expand_braces(path[:match.start()] + alt + path[match.end():])]


def _missing(reference: str) -> str | None:
    """Why a module, path or ``path::test`` the docs name does not exist, else None."""
    if reference.startswith("module:"):
        name = reference.removeprefix("module:")
        return None if importlib.util.find_spec(name) is not None else f"module {name} is not importable"
    path, _, test = reference.partition("::")
    path = re.sub(r":\d.*$", "", path).rstrip(".,:;)")  # a line number is the next test's business
    for candidate in _expand_braces(path):
        if not (ROOT / candidate).exists():
            return f"{candidate} does not exist"
    if test and not re.search(rf"^def {re.escape(test)}\(", (ROOT / path).read_text(), re.M):
        return f"{path} has no test {test}"
    return None


def test_named_modules_scripts_paths_and_links_exist():
    problems = []
    for snippet in all_snippets("shell", "span", "block"):
        references = set(_named_files(snippet))
        references.update(m.group(1) for m in REPO_PATH.finditer(snippet.text))
        problems += [f"{snippet}: {why}" for r in sorted(references) if (why := _missing(r))]
    for doc in DOCS:
        prose = _prose(doc)
        for match in re.finditer(r"\]\(([^)\s]+)\)", prose):
            target = match.group(1).split("#")[0]
            if target and not re.match(r"[a-z]+:", target) and not (doc.parent / target).exists():
                problems.append(f"{doc.relative_to(ROOT)}:{prose.count(chr(10), 0, match.start()) + 1}: "
                                f"link to {target}, which does not exist")
    assert not problems, "\n".join(problems)


def _own_modules() -> set[str]:
    """File names of this repository's Python modules, less ``main.py``, which the official TGIF-QA code
    (cited by line in docs/fidelity.md) has too."""
    return {p.name for d in ("stqa", "server") for p in (ROOT / d).rglob("*.py")} - {"main.py"}


def test_own_code_is_cited_by_name_not_by_line():
    """Line numbers of our code drift with every edit (docs/fidelity.md cited ``stqa/train.py:511-512`` long
    after that file had moved); a function or class name and its file stay findable."""
    own = _own_modules()
    cited = re.compile(r"([\w/]+\.py):\d")
    problems = [f"{s.where}: `{m.group(0)}...`" for s in all_snippets("span") for m in cited.finditer(s.text)
                if Path(m.group(1)).name in own]
    assert not problems, "cite our code by name and file, not by line:\n" + "\n".join(problems)


def test_development_tree_paths_are_never_user_instructions():
    """Users have no ``../shared``: such a path may appear only in a note about the development tree,
    never in a command to type."""
    problems = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        shell = {start + i for lang, start, body in _fenced(doc) if lang in SHELL_LANGUAGES for i in range(len(body))}
        for number, line in enumerate(lines, 1):
            if not DEV_TREE_PATH.search(line):
                continue
            where = f"{doc.relative_to(ROOT)}:{number}"
            if number in shell:
                problems.append(f"{where}: a development-tree path in a shell command: {line.strip()}")
                continue
            first = max((i for i in range(number) if i == 0 or not lines[i - 1].strip()), default=0)
            last = next((i for i in range(number, len(lines)) if not lines[i].strip()), len(lines))
            if DEV_TREE_MARK not in " ".join(lines[first:last]).lower():
                problems.append(f"{where}: a development-tree path in a paragraph that does not say "
                                f"'{DEV_TREE_MARK}': {line.strip()}")
    assert not problems, "\n".join(problems)


# -- README's Python -------------------------------------------------------------------------------------
README_PYTHON = [s for s in snippets(ROOT / "README.md") if s.kind == "python"]


@pytest.mark.parametrize("snippet", README_PYTHON, ids=[s.where for s in README_PYTHON])
def test_readme_python_runs(snippet: Snippet, tmp_path: Path):
    script = tmp_path / "snippet.py"
    script.write_text(snippet.text + "\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{snippet.where}: the README's Python fails:\n{result.stderr[-3000:]}"


# -- the documented workflows, scaled down -----------------------------------------------------------------
def documented(doc: str, start: str) -> list[str]:
    """The ``stqa`` arguments of the one shell line of ``doc`` that starts with ``start``."""
    found = [argv for snippet, argv in COMMANDS if snippet.doc == ROOT / doc and snippet.text.startswith(start)]
    assert len(found) == 1, f"{doc} should show one command starting with {start!r} (found {len(found)}); " \
                            "update this test together with the docs"
    return found[0]


def scaled(argv: list[str], **sizes) -> list[str]:
    """``argv`` with each size option set to a small value (replacing the documented value, or added); every
    other documented option stays as it is."""
    out = list(argv)
    for name, value in sizes.items():
        flag = "--" + name.replace("_", "-")
        if flag in out:
            out[out.index(flag) + 1] = str(value)
        else:
            out += [flag, str(value)]
    return out


def substituted(argv: list[str], files: dict[str, str]) -> list[str]:
    """``argv`` with the files a user would bring replaced by small ones."""
    return [files.get(a, a) for a in argv]


TINY_MODEL = {k: TINY_TRAINING[k] for k in ("embed_dim", "hidden_dim", "att_hidden_dim")}
EXAMPLES = ROOT / "stqa" / "assets" / "examples"


@contextlib.contextmanager
def inside(directory: Path) -> Iterator[Path]:
    """Run the documented lines from ``directory``, so their relative paths (data/synth, runs/e2e) land there."""
    before = Path.cwd()
    os.chdir(directory)
    try:
        yield directory
    finally:
        os.chdir(before)


def run(argv: list[str], capsys, statuses: tuple[int, ...] = (0,)) -> tuple[str, str]:
    """``stqa ARGV`` in this process, which must exit with one of ``statuses``: (stdout, stderr)."""
    rc = stqa_main(argv)
    out, err = capsys.readouterr()
    assert rc in statuses, f"`stqa {' '.join(argv)}` exited {rc}:\n{out[-2000:]}{err[-2000:]}"
    return out, err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """README "Data": ``stqa synth --out data/synth --videos 2000 --seed 1``, at 12 videos."""
    directory = tmp_path_factory.mktemp("docs-workflow")
    with inside(directory):
        assert stqa_main(scaled(documented("README.md", "stqa synth --out data/synth"), videos=12)) == 0
    return directory


@pytest.fixture(scope="module")
def features(workdir: Path) -> Path:
    """README "Data": ``stqa extract ... --backbone tiny --out feats.h5`` as documented (the bundled backbone)."""
    with inside(workdir):
        assert stqa_main(documented("README.md", "stqa extract --videos data/synth/gifs")) == 0
    return workdir / "feats.h5"


def test_data_workflow(workdir: Path, features: Path, capsys):
    from stqa.data import tgifqa
    from stqa.data.features import FeatureStore

    data = workdir / "data" / "synth"
    assert json.loads((data / "synth.json").read_text())["n_videos"] == 12
    keys = {r.key for t in tgifqa.TASKS for s in ("train", "test") for r in tgifqa.load(data, t, s)}
    assert set(FeatureStore(features).keys()) == keys
    for doc in ("README.md", "docs/synthetic.md"):
        with inside(workdir):
            # On a dozen videos the verdict is mostly 3 (INCONCLUSIVE: an interval straddles a threshold); 1 (a
            # task failed) would be a lucky draw of a few questions: neither means a broken command
            out, _ = run(documented(doc, "stqa synth --check data/synth"), capsys, statuses=(0, 1, 3))
        assert "text-only" in out and "checked:" in out, out[-2000:]


def test_training_workflow(workdir: Path, features: Path, capsys):
    with inside(workdir):
        run(scaled(documented("README.md", "stqa train --task all --variant sptp"), **TINY_TRAINING), capsys)
        # docs/training.md, "continue an interrupted run": `...` are that run's options (its own e2e line)
        resume = documented("docs/training.md", "stqa train ... --out runs/e2e --resume")
        options = documented("docs/training.md", "stqa train --task all --data data/synth")
        out_at = options.index("--out")
        resume = options[:out_at] + options[out_at + 2:] + [a for a in resume[1:] if a != "..."]
        run(scaled(resume, **dict(TINY_TRAINING, epochs=2)), capsys)
        assert [json.loads(line)["epoch"] for line in Path("runs/e2e/log.jsonl").read_text().splitlines()] == [0, 1]

        for doc in ("README.md", "docs/training.md"):
            out, err = run(documented(doc, "stqa evaluate --checkpoint runs/e2e"), capsys)
            assert "text-only" in out and "WARNING" not in err  # the test split of its own set: never seen
            # seed 1: the README says the bundled model (seed 0) never saw these videos
            _, err = run(documented(doc, "stqa evaluate --data data/synth --out results/bundled"), capsys)
            assert "stqa-synthetic" in err and "warning:" not in err, err
        baselines = json.loads(Path("results/e2e/metrics.json").read_text())["baselines"]
        assert set(baselines) == {"random", "majority", "text-only"}

        # TGIF-QA with precomputed features: the user's annotations and features -> the synthetic ones
        tgif = documented("README.md", "stqa train --task action --variant tp --data tgif-qa/dataset")
        tgif = substituted(tgif, {"tgif-qa/dataset": "data/synth", "tgif_res5c.h5": features.name})
        run(scaled(tgif, epochs=1, **TINY_MODEL), capsys)
        assert Path("runs/action/best/config.json").is_file()


def test_service_workflow(tmp_path: Path, capsys):
    examples = json.loads((EXAMPLES / "examples.json").read_text())["examples"]
    clip = str(EXAMPLES / examples[0]["video"])  # a bundled example GIF for the user's clip.gif
    # a free port instead of 50051 (ServeProcess adds --port 0) and no fixed metrics port
    server = ServeProcess(*documented("README.md", "stqa serve")[1:], "--metrics-port", "0", cwd=tmp_path)
    try:
        asks = [documented("README.md", 'stqa ask clip.gif "how many times'),
                documented("README.md", 'stqa ask clip.gif "what does the blue square'),
                documented("docs/serving.md", "stqa ask clip.gif")]
        with inside(tmp_path):
            for argv in asks:
                out, _ = run(substituted(argv, {"clip.gif": clip}) + ["--server", server.address], capsys)
                assert "answer:" in out
                if "--attention-out" in argv:
                    assert (tmp_path / argv[argv.index("--attention-out") + 1]).stat().st_size > 0
    finally:
        status = server.terminate()
    assert status == 0, "".join(server.stderr_lines[-20:])
