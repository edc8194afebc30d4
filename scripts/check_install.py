"""The install check (`make check-install`, part of `make test`): stqa installed the way a user installs it.

1. builds an sdist of this tree (``python -m build --sdist``) and a wheel *from that sdist*
   (``pip wheel --no-build-isolation``, against the torch of the interpreter running this script);
2. checks what they hold: the sdist is exactly the git-tracked files; the wheel holds every file of the
   sdist's ``stqa/`` and ``server/`` (as ``stqa.server``) and the service's ``.proto``, byte for byte,
   plus the compiled extension; a wheel built straight from the tree is the same but for the extension
   (which embeds its source path) and that one RECORD row;
3. installs the wheel into a fresh virtualenv with the torch pin (``-c constraints.txt``);
4. from a directory outside the source tree, with nothing of the tree on ``sys.path``, runs
   ``stqa --help``, ``stqa synth``, ``stqa evaluate`` (the bundled model), ``stqa serve --port 0`` with
   ``stqa ask`` against it, and ``python -c "import stqa; print(stqa.build_info())"``, and checks that
   the package version, ``build_info()``'s, the metadata's and the server's agree.

Run it with the project's virtualenv (``make check-install``): the wheel build needs torch,
scikit-build-core, pybind11 and build there. The fresh virtualenv's packages (torch and every
dependency) are installed while the extension compiles, to keep the whole check near a minute.
It ends with ``check_install: N passed, M failed``; exit status 0 only if every step passed.
"""

from __future__ import annotations

import argparse
import base64
import csv
import email.parser
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
# What the wheel must hold, whatever pyproject.toml says: source prefix in the sdist -> prefix in the wheel.
PACKAGE_DIRS = {"stqa/": "stqa/", "server/": "stqa/server/"}
EXTRA_FILES = {"protos/stqa/v1/video_qa.proto": "stqa/v1/video_qa.proto"}
# A few the product cannot run without, named so that a rule that drops them from the sdist too is caught.
MUST_SHIP = ("stqa/data/__init__.py", "stqa/data/synth/__init__.py", "stqa/assets/default/config.json",
             "stqa/assets/default/model.safetensors", "stqa/v1/video_qa_pb2.py", "stqa/v1/video_qa_pb2_grpc.py",
             "stqa/server/main.py", "stqa/v1/video_qa.proto", "stqa/web/page.py",
             "stqa/assets/examples/examples.json", "stqa/assets/examples/synth12345_000008.gif")
EXTENSION = re.compile(r"^stqa/_C\..*\.so$")
SUBCOMMANDS = ("synth", "extract", "train", "evaluate", "serve", "ask", "web")
SYNTH_VIDEOS = 8  # 6 train / 2 test: questions of every task in both splits


class CheckFailed(Exception):
    """One step found the install broken; the message says how."""


def log(msg: str) -> None:
    print(msg, flush=True)


def run(cmd: list[str], logfile: Path, *, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> str:
    """Run ``cmd``, keep its output in ``logfile``; return stdout, raise CheckFailed on a non-zero exit."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    logfile.write_text(f"$ {' '.join(cmd)}\n(cwd {cwd})\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise CheckFailed(f"`{' '.join(cmd)}` exited {proc.returncode} (log {logfile}):\n{tail}")
    return proc.stdout


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel_files(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}


def sdist_files(path: Path) -> tuple[str, dict[str, bytes]]:
    """(top directory, {path below it: content}) of an sdist."""
    out: dict[str, bytes] = {}
    with tarfile.open(path) as t:
        members = [m for m in t.getmembers() if m.isfile()]
        top = members[0].name.split("/", 1)[0]
        for m in members:
            head, _, rest = m.name.partition("/")
            if head != top:
                raise CheckFailed(f"sdist member {m.name} is outside its top directory {top}/")
            out[rest] = t.extractfile(m).read()  # type: ignore[union-attr]
    return top, out


def dist_info(files: dict[str, bytes], name: str) -> tuple[str, str]:
    """(path, text) of the wheel's single ``*.dist-info/<name>``."""
    hits = [p for p in files if re.fullmatch(rf"[^/]+\.dist-info/{name}", p)]
    if len(hits) != 1:
        raise CheckFailed(f"the wheel has {len(hits)} dist-info/{name} files")
    return hits[0], files[hits[0]].decode()


def requirements(metadata_text: str) -> list[str]:
    """The unconditional Requires-Dist lines of a PKG-INFO/METADATA (extras left out)."""
    msg = email.parser.Parser().parsestr(metadata_text)
    return sorted(r for r in msg.get_all("Requires-Dist") or [] if "extra ==" not in r)


# -- the steps ------------------------------------------------------------------------------------------
class Check:
    """The state the steps share: where things are, what has been built."""

    def __init__(self, work: Path, python: str) -> None:
        self.work = work
        self.python = python
        self.logs = work / "logs"
        self.dist = work / "dist"
        self.venv = work / "venv"
        self.cwd = work / "outside"  # the user's directory: not the source tree
        for d in (self.logs, self.dist, self.cwd):
            d.mkdir(parents=True)
        self.sdist: Path | None = None
        self.wheel: Path | None = None
        self.version = ""
        self.venv_proc: subprocess.Popen | None = None
        self.venv_log: IO[str] | None = None
        self.server: subprocess.Popen | None = None

    # The fresh virtualenv's environment: nothing inherited that could point back at the tree.
    def venv_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONNOUSERSITE"] = "1"
        return env

    def vrun(self, name: str, *args: str, timeout: float = 300) -> str:
        """Run a program of the fresh virtualenv from the outside directory."""
        return run([str(self.venv / "bin" / args[0]), *args[1:]], self.logs / f"{name}.log", cwd=self.cwd,
                   env=self.venv_env(), timeout=timeout)

    def build_sdist(self) -> None:
        run([self.python, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(self.dist), str(ROOT)],
            self.logs / "sdist.log", cwd=ROOT)
        (self.sdist,) = self.dist.glob("stqa-*.tar.gz")
        self.version = self.sdist.name[len("stqa-"):-len(".tar.gz")]

    def start_venv(self) -> None:
        """Create the virtualenv and install the sdist's dependencies in the background (no stqa yet)."""
        assert self.sdist is not None
        _, files = sdist_files(self.sdist)
        deps = requirements(files["PKG-INFO"].decode())
        pip = [str(self.venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
        script = (f"{shlex.quote(self.python)} -m venv {shlex.quote(str(self.venv))} && "
                  + " ".join(shlex.quote(a) for a in pip + deps))
        self.venv_log = open(self.logs / "venv.log", "w")  # closed in wait_venv
        self.venv_proc = subprocess.Popen(["bash", "-c", script], cwd=self.cwd, env=self.venv_env(),
                                          stdout=self.venv_log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def check_sdist(self) -> None:
        """The sdist is the git-tracked files (+ PKG-INFO): nothing lost, nothing stray."""
        assert self.sdist is not None
        top, files = sdist_files(self.sdist)
        if top != f"stqa-{self.version}":
            raise CheckFailed(f"sdist top directory {top}, expected stqa-{self.version}")
        missing = [f for f in MUST_SHIP if f not in _sdist_to_wheel(files)]
        if missing:
            raise CheckFailed(f"the sdist lacks {missing}")
        if not (ROOT / ".git").exists() or shutil.which("git") is None:
            log("   (not a git checkout: sdist compared with nothing)")
            return
        tracked = set(subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
                      .stdout.decode().split("\0")) - {""}
        tracked = {f for f in tracked if (ROOT / f).is_file()}  # deleted but not yet committed: not shipped
        shipped = set(files) - {"PKG-INFO"}
        if tracked - shipped:
            raise CheckFailed(f"git-tracked files missing from the sdist: {sorted(tracked - shipped)}")
        if shipped - tracked:
            raise CheckFailed(f"files not tracked by git would ship in the sdist (commit, delete or .gitignore "
                              f"them): {sorted(shipped - tracked)}")

    def build_wheel(self) -> None:
        """The wheel, built from the sdist (never the tree) against this interpreter's torch."""
        assert self.sdist is not None
        out = self.work / "wheel"
        run([self.python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-cache-dir", "-w",
             str(out), str(self.sdist)], self.logs / "wheel.log", cwd=self.cwd, timeout=600)
        (self.wheel,) = out.glob("stqa-*.whl")

    def check_wheel(self) -> None:
        """Every sdist file of the packages, byte for byte, the extension, and a RECORD that matches."""
        assert self.sdist is not None and self.wheel is not None
        _, sfiles = sdist_files(self.sdist)
        wfiles = wheel_files(self.wheel)
        expected = _sdist_to_wheel(sfiles)
        payload = {p: d for p, d in wfiles.items() if not p.split("/", 1)[0].endswith(".dist-info")}
        ext = [p for p in payload if EXTENSION.match(p)]
        if len(ext) != 1:
            raise CheckFailed(f"the wheel has {len(ext)} compiled extensions stqa/_C.*.so: {ext}")
        missing = sorted(set(expected) - set(payload))
        extra = sorted(set(payload) - set(expected) - set(ext))
        changed = sorted(p for p in set(expected) & set(payload) if expected[p] != payload[p])
        if missing or extra or changed:
            raise CheckFailed(f"wheel vs sdist: missing {missing}, unexpected {extra}, different {changed}")
        _, record = dist_info(wfiles, "RECORD")
        rows = {row[0]: row[1] for row in csv.reader(record.splitlines()) if row}
        for path, data in wfiles.items():
            if path.endswith(".dist-info/RECORD"):
                continue
            digest = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if rows.get(path) != digest:
                raise CheckFailed(f"RECORD row of {path} is {rows.get(path)!r}, the file hashes to {digest}")
        _, metadata = dist_info(wfiles, "METADATA")
        meta = email.parser.Parser().parsestr(metadata)
        if meta["Name"] != "stqa" or meta["Version"] != self.version:
            raise CheckFailed(f"wheel metadata says {meta['Name']} {meta['Version']}, the sdist {self.version}")
        if requirements(metadata) != requirements(sfiles["PKG-INFO"].decode()):
            raise CheckFailed("the wheel's Requires-Dist differs from the sdist's")
        _, entry_points = dist_info(wfiles, "entry_points.txt")
        if not re.search(r"^stqa\s*=\s*stqa\.cli:main$", entry_points, re.M):
            raise CheckFailed(f"no `stqa` console script in entry_points.txt:\n{entry_points}")
        log(f"   {len(payload)} files: {len(expected)} from the sdist + {ext[0]}")

    def compare_tree_wheel(self) -> None:
        """`pip wheel .` from the tree (what `pip install .` installs) equals the sdist's wheel."""
        assert self.wheel is not None
        out = self.work / "tree-wheel"
        run([self.python, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-cache-dir", "-w", str(out),
             str(ROOT)],
            self.logs / "tree-wheel.log", cwd=ROOT, timeout=600)
        (tree_wheel,) = out.glob("stqa-*.whl")
        a, b = wheel_files(self.wheel), wheel_files(tree_wheel)
        if set(a) != set(b):
            raise CheckFailed(f"only in the sdist's wheel: {sorted(set(a) - set(b))}; "
                              f"only in the tree's: {sorted(set(b) - set(a))}")
        # The extension embeds the path it was compiled at (__FILE__ in torch's checks), so its bytes differ
        # between a build in the tree and one in pip's temporary directory; everything else must not.
        differ = sorted(p for p in a if a[p] != b[p])
        allowed = {p for p in a if EXTENSION.match(p) or p.endswith(".dist-info/RECORD")}
        if set(differ) - allowed:
            raise CheckFailed(f"the sdist's wheel and the tree's wheel differ in {sorted(set(differ) - allowed)}")
        ra, rb = (dict((r[0], r[1:]) for r in csv.reader(w[dist_info(w, "RECORD")[0]].decode().splitlines()) if r)
                  for w in (a, b))
        if {p for p in ra if ra[p] != rb.get(p)} - {p for p in ra if EXTENSION.match(p)}:
            raise CheckFailed("the two RECORDs differ in more than the extension's row")
        log(f"   {len(a)} files; identical but for {', '.join(differ) or 'nothing'}")

    def wait_venv(self) -> None:
        assert self.venv_proc is not None
        code = self.venv_proc.wait(timeout=600)
        assert self.venv_log is not None
        self.venv_log.close()
        if code != 0:
            tail = "\n".join((self.logs / "venv.log").read_text().splitlines()[-25:])
            raise CheckFailed(f"creating the virtualenv and installing the dependencies failed ({code}):\n{tail}")

    def install(self) -> None:
        """`pip install` the wheel: dependencies resolved from its own metadata, torch held to the pin."""
        assert self.wheel is not None
        self.vrun("install", "python", "-m", "pip", "install", "-c", str(ROOT / "constraints.txt"), str(self.wheel))
        self.vrun("pip-check", "python", "-m", "pip", "check")

    def check_isolated_and_versions(self) -> None:
        """stqa comes from the virtualenv, the tree is invisible, and every version source agrees."""
        probe = ("import importlib.metadata as m, json, sys, torch, stqa\n"
                 "print(json.dumps({'file': stqa.__file__, 'path': sys.path, 'torch': torch.__version__,"
                 " 'version': stqa.__version__, 'build_info': stqa.build_info()['version'],"
                 " 'metadata': m.version('stqa')}))")
        info = json.loads(self.vrun("isolation", "python", "-c", probe).strip().splitlines()[-1])
        pin = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.M)
        if pin and info["torch"].split("+")[0] != pin.group(1):
            raise CheckFailed(f"the virtualenv got torch {info['torch']}, constraints.txt pins {pin.group(1)}")
        stqa_file = Path(info["file"]).resolve()
        if not stqa_file.is_relative_to(self.venv.resolve()):
            raise CheckFailed(f"stqa was imported from {stqa_file}, not from the fresh virtualenv {self.venv}")
        leaks = [p for p in info["path"] if p and Path(p).resolve().is_relative_to(ROOT)]
        if leaks:
            raise CheckFailed(f"the source tree is on the virtualenv's sys.path: {leaks}")
        versions = {k: info[k] for k in ("version", "build_info", "metadata")} | {"sdist": self.version}
        if len(set(versions.values())) != 1:
            raise CheckFailed(f"versions disagree: {versions}")
        log(f"   {stqa_file.parent} (torch {info['torch']}), version {self.version} everywhere")

    def cli_help(self) -> None:
        out = self.vrun("help", "stqa", "--help")
        missing = [c for c in SUBCOMMANDS if not re.search(rf"^\s+{c}\s", out, re.M)]
        if missing:
            raise CheckFailed(f"`stqa --help` does not list {missing}:\n{out}")

    def synth(self) -> None:
        self.vrun("synth", "stqa", "synth", "--out", "synth", "--videos", str(SYNTH_VIDEOS), "--seed", "0")
        gifs = list((self.cwd / "synth" / "gifs").glob("*.gif"))
        if len(gifs) != SYNTH_VIDEOS:
            raise CheckFailed(f"stqa synth wrote {len(gifs)} GIFs, asked for {SYNTH_VIDEOS}")

    def evaluate(self) -> None:
        """The bundled model, loaded from the installed package, scores the synthetic test split."""
        self.vrun("evaluate", "stqa", "evaluate", "--data", "synth", "--out", "eval")
        info = json.loads((self.cwd / "eval" / "info.json").read_text())
        metrics = json.loads((self.cwd / "eval" / "metrics.json").read_text())
        if not Path(info["checkpoint"]).resolve().is_relative_to(self.venv.resolve()):
            raise CheckFailed(f"evaluate used {info['checkpoint']}, not the bundled model in the virtualenv")
        if set(metrics) != {"count", "action", "transition", "frameqa"} or any(m["n"] == 0 for m in metrics.values()):
            raise CheckFailed(f"evaluate did not score every task: {metrics}")
        # The bundled model scores >= 96% on this benchmark; far lower means it did not load or run right.
        low = {t: m["accuracy"] for t, m in metrics.items() if t != "count" and m["accuracy"] < 0.5}
        if low or metrics["count"]["mse"] > 2.0:
            raise CheckFailed(f"the bundled model scored implausibly: {metrics}")
        log(f"   {info['model_version']}: count mse {metrics['count']['mse']:.3f}, "
            + ", ".join(f"{t} {metrics[t]['accuracy']:.0%}" for t in ("action", "transition", "frameqa")))

    def serve_and_ask(self) -> None:
        """`stqa serve --port 0` on loopback, `stqa ask` a test question, ModelInfo, metrics, SIGTERM."""
        serve_log = open(self.logs / "serve.stderr.log", "w")  # closed below
        self.server = subprocess.Popen(
            [str(self.venv / "bin" / "stqa"), "serve", "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"],
            cwd=self.cwd, env=self.venv_env(), stdout=subprocess.PIPE, stderr=serve_log, text=True,
            stdin=subprocess.DEVNULL)
        try:
            assert self.server.stdout is not None
            first = self.server.stdout.readline()
            ready = self.server.stdout.readline()
            bound = re.search(r"listening on (127\.0\.0\.1):(\d+) \(grpc\); metrics (http://\S+)", first)
            if not bound or "ready" not in ready:
                raise CheckFailed(f"stqa serve did not start: {first!r} {ready!r} (log {serve_log.name})")
            address, metrics_url = f"{bound.group(1)}:{bound.group(2)}", bound.group(3)
            # A count question of the test split, asked over gRPC; evaluate scored the same one in-process.
            data = self.cwd / "synth"
            with open(data / "Test_count_question.csv", newline="") as f:
                row = next(csv.DictReader(f, delimiter="\t"))
            predicted = next(p["prediction"] for p in map(json.loads, open(self.cwd / "eval" / "predictions.jsonl"))
                             if p["task"] == "count" and p["qid"] == row["vid_id"] and p["key"] == int(row["key"]))
            out = self.vrun("ask", "stqa", "ask", str(data / "gifs" / f"{row['gif_name']}.gif"), row["question"],
                            "--task", "count", "--server", address, "--attention-out", "look.png")
            answer = re.search(r"^answer:\s+(\S+)", out, re.M)
            if not answer or answer.group(1) != str(predicted):
                raise CheckFailed(f"stqa ask answered {answer and answer.group(1)!r}, evaluate predicted "
                                  f"{predicted} for the same question:\n{out}")
            if (self.cwd / "look.png").read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
                raise CheckFailed("stqa ask --attention-out did not write a PNG")
            server_version = self.vrun("model-info", "python", "-c",
                                       "import sys; from stqa.client import VideoQAClient\n"
                                       "with VideoQAClient(sys.argv[1]) as c: print(c.model_info().server_version)",
                                       address).strip()
            if server_version != self.version:
                raise CheckFailed(f"the server reports server_version {server_version!r}, the package is "
                                  f"{self.version}")
            scrape = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
            if "stqa_" not in scrape:
                raise CheckFailed(f"{metrics_url} serves no stqa metrics")
            self.server.send_signal(signal.SIGTERM)
            code = self.server.wait(timeout=60)
            if code != 0:
                raise CheckFailed(f"stqa serve exited {code} on SIGTERM (log {serve_log.name})")
            log(f"   {address}: {row['question']!r} -> {answer.group(1)} (evaluate: {predicted}); "
                f"server_version {server_version}; drained and exited 0")
        finally:
            self.stop_server()
            serve_log.close()

    def build_info(self) -> None:
        out = self.vrun("build-info", "python", "-c", "import stqa; print(stqa.build_info())")
        log(f"   {out.strip()}")
        if f"'version': '{self.version}'" not in out:
            raise CheckFailed(f"build_info() does not report version {self.version}: {out}")

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
            self.server.wait()

    def stop_background(self) -> None:
        self.stop_server()
        if self.venv_proc is not None and self.venv_proc.poll() is None:
            os.killpg(self.venv_proc.pid, signal.SIGKILL)
            self.venv_proc.wait()
        if self.venv_log is not None:
            self.venv_log.close()


def _work_parent() -> str | None:
    """Where the work directory goes: $TMPDIR if set, else /dev/shm when it has room, else the default.

    The fresh virtualenv is 1.2 GB in ~29,000 files (mostly torch): on this VM's disk, writing and then
    deleting it cost ~30 s of wall time, in memory almost nothing.
    """
    if os.environ.get("TMPDIR"):
        return None
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 << 30:
        return str(shm)
    return None


def _sdist_to_wheel(files: dict[str, bytes]) -> dict[str, bytes]:
    """The wheel's package files that the sdist's files should become."""
    out: dict[str, bytes] = {}
    for path, data in files.items():
        for src, dst in PACKAGE_DIRS.items():
            if path.startswith(src):
                out[dst + path[len(src):]] = data
                break
        if path in EXTRA_FILES:
            out[EXTRA_FILES[path]] = data
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory (default: only on failure)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="stqa-install-", dir=_work_parent())).resolve()
    if work.is_relative_to(ROOT):
        raise SystemExit(f"check_install: the work directory {work} is inside the source tree; set TMPDIR")
    check = Check(work, sys.executable)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("sdist (python -m build --sdist)", check.build_sdist),
        ("sdist holds exactly the tracked files", check.check_sdist),
        ("fresh virtualenv: dependencies (background)", check.start_venv),
        ("wheel from the sdist (pip wheel --no-build-isolation)", check.build_wheel),
        ("wheel holds the packages, data and extension", check.check_wheel),
        ("wheel from the tree equals the sdist's", check.compare_tree_wheel),
        ("fresh virtualenv ready", check.wait_venv),
        ("pip install the wheel (-c constraints.txt)", check.install),
        ("stqa imported from the virtualenv; one version", check.check_isolated_and_versions),
        ("stqa --help", check.cli_help),
        (f"stqa synth ({SYNTH_VIDEOS} videos)", check.synth),
        ("stqa evaluate (bundled model)", check.evaluate),
        ("stqa serve --port 0 + stqa ask", check.serve_and_ask),
        ("import stqa; print(stqa.build_info())", check.build_info),
    ]
    log(f"check_install: work directory {work}")
    started = time.monotonic()
    passed = 0
    failed = False
    try:
        for title, step in steps:
            t0 = time.monotonic()
            try:
                step()
            except (CheckFailed, subprocess.TimeoutExpired, OSError, ValueError, KeyError, StopIteration) as exc:
                log(f"FAIL {title} ({time.monotonic() - t0:.1f} s): {exc}")
                failed = True
                break
            passed += 1
            log(f"ok   {title} ({time.monotonic() - t0:.1f} s)")
    finally:
        check.stop_background()
    log(f"check_install: {time.monotonic() - started:.0f} s wall"
        + (f"; logs kept in {work}" if failed or args.keep else ""))
    if not args.keep:
        # On failure keep the logs, the sdist and the wheel; the 1.2 GB virtualenv only with --keep.
        shutil.rmtree(work if not failed else check.venv, ignore_errors=True)
    log(f"check_install: {passed} passed, {int(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
