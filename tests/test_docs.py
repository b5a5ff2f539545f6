"""Every code block of README.md and docs/*.md that is meant to run, run — so no example can rot.

Convention (also in DEVELOPERS.md's spirit: docs snippets are tests):

- a fenced block whose info string starts with ``python`` runs as a script in a subprocess;
- ``sh`` (or ``bash``/``shell``) runs line by line from the repository root (``\\`` continues a
  line); ``twinstage`` and ``python`` there mean this interpreter's ``-m twinstage`` and itself;
- ``no-run`` anywhere in the info string keeps a block out (output samples, fragments, things
  that need a window, hardware or run forever); any other language (``text``, ``json``, ``usda``,
  none) is not run either.

Blocks run in a scratch copy of the repository (one per document, blocks in document order, so a
later block may use a file an earlier one wrote); paths like ``scenes/pump_testbed.usda`` and
``out/...`` resolve there and nothing is written into the checkout. A block that talks to
``ws://127.0.0.1:8765/`` runs against a real ``twinstage demo --serve`` started for the session on
a free loopback port: the port and the ``OPERATOR-TOKEN`` / ``VIEWER-TOKEN`` placeholders are
replaced by what that server printed. New documents are picked up automatically; a failing block
is reported as ``file:line`` with its output.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
LIVE_URL = "ws://127.0.0.1:8765/"
TIMEOUT = 240  # seconds per block: a hung example fails instead of hanging CI
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str | None:
        words = self.info.split()
        if not words or "no-run" in words:
            return None
        return RUNNABLE.get(words[0].lower())


def parse_blocks(text: str, path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown text (``` or ~~~, any indent; an unclosed block runs to the end)."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m or ("`" in m["info"] and m["fence"][0] == "`"):
            i += 1
            continue
        fence, indent, start = m["fence"], len(m["indent"]), i
        body = []
        i += 1
        while i < len(lines):
            close = _FENCE.match(lines[i])
            if close and close["fence"][0] == fence[0] and len(close["fence"]) >= len(fence) and not close["info"].strip():
                break
            ln = lines[i]
            body.append(ln[min(indent, len(ln) - len(ln.lstrip())):])
            i += 1
        blocks.append(Block(path, start + 1, m["info"].strip(), "\n".join(body) + "\n"))
        i += 1
    return blocks


def all_blocks() -> list[Block]:
    return [b for p in DOCS for b in parse_blocks(p.read_text(encoding="utf-8"), p)]


RUN = [b for b in all_blocks() if b.kind]


# -- the parser itself -------------------------------------------------------------------------------


def test_parser_finds_blocks_with_their_lines_and_info():
    text = "intro\n```python\nprint(1)\n```\n\n~~~sh no-run\nrm -rf /\n~~~\n  ```sh\n  echo hi\n  ```\n````\n```inner```\n````\n"
    got = parse_blocks(text, ROOT / "x.md")
    assert [(b.line, b.info, b.code, b.kind) for b in got] == [
        (2, "python", "print(1)\n", "python"),
        (6, "sh no-run", "rm -rf /\n", None),
        (9, "sh", "echo hi\n", "sh"),
        (12, "", "```inner```\n", None),
    ]


def test_there_are_runnable_blocks_in_the_readme():
    readme = [b for b in RUN if b.path.name == "README.md"]
    assert len(readme) >= 2, [b.where for b in RUN]


# -- running them ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """doc → its scratch copy of the repository (made on first use)."""
    return {}


def _workspace(workspaces: dict[Path, Path], tmp_path_factory: pytest.TempPathFactory, doc: Path) -> Path:
    if doc not in workspaces:
        ws = tmp_path_factory.mktemp("docs-" + doc.stem) / "repo"
        skip = {".git", ".venv", "out", "src", "tests", ".pytest_cache", "__pycache__"}
        shutil.copytree(ROOT, ws, ignore=lambda d, names: [n for n in names if n in skip or n.endswith(".egg-info")], symlinks=True)
        workspaces[doc] = ws
    return workspaces[doc]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``twinstage demo --serve 0``: ``{"url", "port", "operator", "viewer", "snippet", "output"}``."""
    out = tmp_path_factory.mktemp("live")
    proc = subprocess.Popen([sys.executable, "-u", "-m", "twinstage", "demo", "--out", str(out / "demo"), "--serve", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=out)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        while "running until Ctrl-C" not in "".join(seen):
            try:
                seen.append(lines.get(timeout=120))
            except queue.Empty:
                pytest.fail("twinstage demo --serve printed no 'running until Ctrl-C' in 120 s:\n" + "".join(seen))
        text = "".join(seen)
        url = re.search(r"bridge (ws://127\.0\.0\.1:(\d+)/)", text)
        op = re.search(r"operator \(may set values.*\?token=(\S+)", text)
        view = re.search(r"viewer \(read-only\).*\?token=(\S+)", text)
        snippet = re.search(r"^import asyncio\n.*?^asyncio\.run\(main\(\)\)$", text, re.M | re.S)
        assert url and op and view and snippet, text
        yield {"url": url[1], "port": int(url[2]), "operator": op[1], "viewer": view[1], "snippet": snippet[0], "output": text}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: the demo finishes its recording and exits
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _live(code: str, request: pytest.FixtureRequest) -> str:
    if LIVE_URL not in code and "OPERATOR-TOKEN" not in code and "VIEWER-TOKEN" not in code:
        return code
    live = request.getfixturevalue("live_server")
    return (code.replace("127.0.0.1:8765", f"127.0.0.1:{live['port']}")
            .replace("OPERATOR-TOKEN", live["operator"]).replace("VIEWER-TOKEN", live["viewer"]))


def _sh_lines(code: str) -> list[str]:
    out, cur = [], ""
    for ln in code.splitlines():
        if ln.rstrip().endswith("\\"):
            cur += ln.rstrip()[:-1] + " "
            continue
        cur += ln
        if cur.strip() and not cur.strip().startswith("#"):
            out.append(cur.strip())
        cur = ""
    return out


_CMD = re.compile(r"(^|[;&|(]\s*|\$\(\s*)(twinstage|python3?)(?=\s|$)")


def _sh_command(line: str) -> str:
    """``twinstage …`` → ``<this python> -m twinstage …``; ``python …`` → ``<this python> …`` (in command position)."""
    exe = shlex.quote(sys.executable)
    return _CMD.sub(lambda m: m[1] + (f"{exe} -m twinstage" if m[2] == "twinstage" else exe), line)


def _env(ws: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)  # snippets that could open a window take the offscreen path
    env.pop("WAYLAND_DISPLAY", None)
    # system directories only, nothing of ours (no venv bin/): a block must say how it runs our code
    env["PATH"] = os.pathsep.join(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    return env


def _report(block: Block, what: str, proc: subprocess.CompletedProcess[str]) -> str:
    return f"{block.where}: {what} exited {proc.returncode}\n--- block ---\n{block.code}--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_doc_block_runs(block: Block, workspaces, tmp_path_factory, request):
    ws = _workspace(workspaces, tmp_path_factory, block.path)
    (ws / "out").mkdir(exist_ok=True)
    code = _live(block.code, request)
    env = _env(ws)
    if block.kind == "python":
        script = ws / "out" / f".doc_{block.path.stem}_{block.line}.py"
        script.write_text(code, encoding="utf-8")
        try:
            proc = subprocess.run([sys.executable, str(script)], cwd=ws, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{block.where}: still running after {TIMEOUT} s\n{block.code}\n{exc.stdout or ''}")
        assert proc.returncode == 0, _report(block, "the block", proc)
        assert "Traceback" not in proc.stderr, _report(block, "the block", proc)
    else:
        lines = _sh_lines(code)
        assert lines, f"{block.where}: an sh block without commands (mark it no-run)"
        for ln in lines:
            cmd = _sh_command(ln)
            try:
                proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", cmd], cwd=ws, env=env, capture_output=True, text=True,
                                      timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{block.where}: `{ln}` still running after {TIMEOUT} s")
            assert proc.returncode == 0, _report(block, f"`{ln}`", proc)


def test_sh_commands_run_this_interpreter():
    exe = shlex.quote(sys.executable)
    assert _sh_command("twinstage info x.usda") == f"{exe} -m twinstage info x.usda"
    assert _sh_command("python -m twinstage.bridge.schema > a.json") == f"{exe} -m twinstage.bridge.schema > a.json"
    assert _sh_command("ls twinstage/ && twinstage --version") == f"ls twinstage/ && {exe} -m twinstage --version"
    assert _sh_lines("# c\na \\\n  b\n\nc\n") == ["a    b", "c"]


# -- what demo-live prints is what the README shows ----------------------------------------------------


def test_readme_shows_the_snippet_demo_serve_prints(live_server):
    """The Python snippet ``make demo-live`` prints, with its port and token as placeholders, is a README block."""
    printed = live_server["snippet"].replace(f"127.0.0.1:{live_server['port']}", "127.0.0.1:8765").replace(live_server["operator"], "OPERATOR-TOKEN")
    readme = [b.code.strip() for b in all_blocks() if b.path.name == "README.md" and b.kind == "python"]
    assert printed.strip() in readme, f"README.md has no block equal to what demo --serve prints:\n{printed}"


def test_the_printed_snippet_works_as_printed(live_server, tmp_path):
    proc = subprocess.run([sys.executable, "-c", live_server["snippet"]], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tick, level, n, word = proc.stdout.split()  # the value it set, read back from the stream
    assert int(tick) > 0 and float(level) == 0.6 and int(n) > 10 and word == "values", proc.stdout


# -- what docs/data.md promises about the real data ------------------------------------------------------


@pytest.mark.parametrize("require", [False, True])
def test_missing_real_data_is_one_skip_line_or_a_failure_where_required(tmp_path, require):
    """Without the data folder: skipped, with ONE summary line for all of them; TWINSTAGE_REQUIRE_DATA=1 (CI): failed."""
    env = {k: v for k, v in os.environ.items() if k not in ("TWINSTAGE_DATA", "TWINSTAGE_SHARED_DATA", "TWINSTAGE_REQUIRE_DATA")}
    env["TWINSTAGE_DATA"] = str(tmp_path / "no-such-folder")
    if require:
        env["TWINSTAGE_REQUIRE_DATA"] = "1"
    tests = ["tests/test_cli.py::test_info_on_a_usd_wg_file_lists_candidate_assets", "tests/test_cli.py::test_run_on_a_file_without_twin_prims",
             "tests/test_cli.py::test_python_m_twinstage_runs_the_cli"]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if require:
        assert proc.returncode == 1 and "2 errors" in out and "TWINSTAGE_REQUIRE_DATA is set" in out, out
    else:
        assert proc.returncode == 0 and "1 passed, 2 skipped" in out, out
        lines = [ln for ln in out.splitlines() if "real-data tests skipped" in ln]
        assert len(lines) == 1 and re.fullmatch(r"SKIPPED \[2\] tests/conftest\.py:\d+: real-data tests skipped: set TWINSTAGE_DATA or place "
                                                r"the data at \.\./shared/data; see docs/data\.md", lines[0]), out
