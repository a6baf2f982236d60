"""The README's set-up commands and .ci/run must not drift apart."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"(Run the main job|Run the tests)[^\n]*\n\n```bash\n(.+?)\n```", text)
    return dict(blocks)


def test_readme_has_exactly_the_two_setup_commands():
    cmds = readme_commands()
    assert set(cmds) == {"Run the main job", "Run the tests"}
    assert "segcp demo" in cmds["Run the main job"]
    assert "torch==2.13.0" in cmds["Run the tests"]
    # torch comes before anything that could pull it in.
    test_cmd = cmds["Run the tests"]
    assert test_cmd.index("torch==2.13.0") < test_cmd.index(".[test]")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == readme_commands()["Run the tests"]
    assert "../shared/data" in "\n".join(ci)
