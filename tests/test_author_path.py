"""docs/conformance.md section 0, the backend author's five-minute path, run as written.

A fresh package ``mystore/`` in a temporary folder gets the section's backend (its first
``python`` block), the line ``python -m spec_tests probe`` prints, then the suite (run as plain
``pytest`` would: without the current folder on sys.path), a planted bug whose failure output
must be short and complete, and the replay command that output gives.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "conformance.md"
SPEC = "mystore.conformance:MyStoreBackend"

# Step 5's planted bug: every tensor is written as zeros (the shape of a real bug: a staging
# buffer handed to the writer before it is filled).
_ZEROES = """

import torch


class _ZeroingWriter(FileSystemWriter):
    def write_data(self, plan, planner):
        resolve = planner.resolve_data
        planner.resolve_data = lambda item: _zeros(resolve(item))
        return super().write_data(plan, planner)


def _zeros(data):
    if not isinstance(data, torch.Tensor):
        return data
    staged = torch.empty_like(data)  # the staging buffer, never filled
    staged.untyped_storage().fill_(0)  # fresh memory reads as zeros, for every dtype
    return staged


MyStoreBackend.make_writer = lambda self, path: _ZeroingWriter(path)
"""


def _backend_block() -> str:
    section = DOCS.read_text(encoding="utf-8").split("## 0.", 1)[1].split("\n## 1.", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "section 0 of docs/conformance.md lost its backend block"
    return found.group(1)


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DCP_SPEC_BACKEND")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@pytest.fixture(scope="module")
def author(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding ``mystore/``, its backend written as section 0 step 2 gives it."""
    folder = tmp_path_factory.mktemp("author")
    (folder / "mystore").mkdir()
    (folder / "mystore" / "__init__.py").write_text("", encoding="utf-8")
    (folder / "mystore" / "conformance.py").write_text(_backend_block(), encoding="utf-8")
    return folder


def test_the_backend_block_is_ten_lines_of_code() -> None:
    code = [line for line in _backend_block().splitlines() if line.strip()]
    assert len(code) <= 10, code


def test_the_five_minute_path(author: Path) -> None:
    module = author / "mystore" / "conformance.py"
    # step 3: the probe prints one capabilities= line, pasted over `capabilities = None`
    probed = _run(author, "-m", "spec_tests", "probe", "--backend", SPEC)
    assert probed.returncode == 0, probed.stdout + probed.stderr
    line = probed.stdout.strip().splitlines()[-1]
    assert line.startswith("capabilities=frozenset({"), probed.stdout
    text = module.read_text(encoding="utf-8")
    pasted = re.sub(r"capabilities = None.*", line.replace("=", " = ", 1), text)
    assert pasted != text
    module.write_text(pasted, encoding="utf-8")

    # step 4: the suite, torch's known bugs listed by one option; -P: plain `pytest` does not
    # put the current folder on sys.path, and the plugin must still find mystore
    suite = ["-m", "pytest", "--pyargs", "spec_tests", f"--dcp-backend={SPEC}"]
    picked = "test_validate_checkpoint_id_is_total or test_zero_dim_and_zero_size"
    ran = _run(
        author, "-P", *suite, "--dcp-xfails=torch-fs", "-k", picked, "-p", "no:cacheprovider"
    )
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-3000:]
    assert re.search(r"\b1 passed\b.*\b1 xfailed\b", ran.stdout), ran.stdout[-3000:]
    assert "dcp backend: mystore (spec 'mystore.conformance:MyStoreBackend')" in ran.stdout

    # step 5: a planted bug; the output, without -x, is short and says all that is needed
    module.write_text(pasted + _ZEROES, encoding="utf-8")
    # Not the multi-MiB properties: a failing one holds every failing example's tensors (GiBs
    # under this bug; a separate problem), and the early stop needs none of them.
    small = ["-k", "not large and not buffer"]
    roundtrip = ["-m", "pytest", "--pyargs", "spec_tests.test_roundtrip", suite[-1]]
    failed = _run(author, *roundtrip, *small)
    out = failed.stdout
    assert failed.returncode == 1, out[-6000:] + failed.stderr[-3000:]
    assert len(out.splitlines()) < 300, f"{len(out.splitlines())} lines:\n{out}"
    assert out.count("dcp dtypes:") == 1  # the capabilities, once, in the header
    assert "frozenset(" not in out
    assert "<spec of" not in out
    summary = out.split("dcp conformance failures", 1)[1]
    assert "stopped early after 3 failed properties (--dcp-maxfail=3, the default)" in summary
    first = summary.split("\n2. ", 1)[0]
    assert re.search(r"^1\. ::TestRoundTrip::test_\w+$", first, re.M), first
    assert re.search(r"error: .*ContractViolation: .*bytes differ", first), first
    assert "Draw 1 (" in first  # the shrunk example's draws
    replay = re.search(r"^\s+replay: (.*)$", first, re.M)
    assert replay is not None, first
    command = shlex.split(replay.group(1))
    assert command[:5] == ["python", "-m", "pytest", "--pyargs", "spec_tests.test_roundtrip"]
    assert f"--dcp-backend={SPEC}" in command
    assert "--hypothesis-profile=dcp-dev" in command

    # step 6: the pasted replay fails that property again, the same way
    again = _run(author, *command[1:], "-p", "no:cacheprovider")
    assert again.returncode == 1, again.stdout[-6000:]
    assert re.search(r"\b1 failed\b", again.stdout), again.stdout[-3000:]
    error = re.search(r"error: (.*)$", first, re.M)
    assert error is not None
    assert error.group(1) in again.stdout


def test_an_unknown_builtin_list_names_the_known_ones(author: Path) -> None:
    ran = _run(author, "-m", "pytest", "--pyargs", "spec_tests", "--dcp-xfails=torch-nope")
    assert ran.returncode == 4, ran.stdout + ran.stderr
    assert "--dcp-xfails torch-nope: no such built-in list; expected one of" in ran.stderr
    assert "torch-fs," in ran.stderr
