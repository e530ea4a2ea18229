"""The README's install steps, run as written in a throwaway root folder (issue 16, item 10).

The block between `<!-- install-steps ... -->` and the end of its code fence is read from
README.md and run line by line with bash, as root, from the repository. What this machine
cannot do for real is mapped, and only that:

- absolute paths `/etc/...`, `/opt/...`, `/var/...` go under the throwaway root;
- `systemd-sysusers` gets `--root=` (it writes the root's own passwd and group files), and the
  owner names `somsd` become the numeric ids it created there (the host has no such user);
- the venv and `pip install .` become a wrapper running this checkout's somsd (no network
  install in a test), which is what `/opt/somsd/venv/bin/somsd` then is;
- `systemctl daemon-reload` is skipped and `systemctl enable --now` becomes
  `systemctl --root=... enable` (there is no running systemd; enabling works offline);
- the "edit the config" step writes the secret files the example names and points `data_dir`
  into the root.

Then the result is checked: modes and owners, that the somsd user can read its config (and not
the token), the enable symlink, and `systemd-analyze verify` on the installed unit.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "LC_ALL": "C"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the install steps run as root"),
]


def install_steps() -> list[str]:
    text = (REPO / "README.md").read_text()
    marker = text.index("<!-- install-steps")
    fence = text.index("```sh\n", marker) + len("```sh\n")
    block = text[fence : text.index("```", fence)]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture
def root() -> Iterator[Path]:
    """A root folder others may traverse (pytest's tmp_path is 0700 root-only)."""
    path = Path(tempfile.mkdtemp(prefix="somsd-install-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def account_id(root: Path, table: str, name: str) -> int:
    for line in (root / "etc" / table).read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    raise AssertionError(f"no {name} in {root}/etc/{table}")


def mapped(line: str, root: Path) -> str | None:
    """The command as this machine can run it (None: nothing to run here); see the docstring."""
    if line.startswith("python3 -m venv /opt/somsd/venv"):
        wrapper = root / "opt" / "somsd" / "venv" / "bin" / "somsd"
        wrapper.parent.mkdir(parents=True)
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m somsd "$@"\n')
        wrapper.chmod(0o755)
        return None
    if line == "/opt/somsd/venv/bin/pip install .":
        return None
    if line == "systemctl daemon-reload":
        return None
    if line == "systemctl enable --now somsd":
        return f"systemctl --root={root} enable somsd"
    command = re.sub(r"(?<=[\s>=(:])/(etc|opt|var)/", f"{root}/\\1/", " " + line)[1:]
    command = re.sub(r"^(/(etc|opt|var)/)", f"{root}/\\2/", command)
    command = command.replace("systemd-sysusers ", f"systemd-sysusers --root={root} ", 1)
    if " somsd" in command and (root / "etc" / "group").exists():
        uid = account_id(root, "passwd", "somsd")
        gid = account_id(root, "group", "somsd")
        command = command.replace("-g somsd", f"-g {gid}").replace("-o somsd", f"-o {uid}")
    return command


def edit_config(root: Path) -> None:
    """What the admin does at "edit it": secrets for what the example names, a data dir."""
    config = root / "etc" / "somsd" / "somsd.toml"
    text = config.read_text()
    data_dir = root / "var" / "lib" / "somsd"
    data_dir.mkdir(parents=True)
    config.write_text(text.replace('"/var/lib/somsd"', f'"{data_dir}"', 1))
    for name in re.findall(r'^\w+_file = "([^"/]+)"', text, re.M):
        if name != "admin.token":
            secret = root / "etc" / "somsd" / name
            secret.write_text(f"value-of-{name}\n")
            secret.chmod(0o600)


def run(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own commands from the README
        ["/bin/bash", "-euo", "pipefail", "-c", command],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_readme_install_steps_work_as_written(root: Path) -> None:
    steps = install_steps()
    assert any(step.startswith("install -D") and "sysusers.d" in step for step in steps)
    for step in steps:
        if step.startswith("/opt/somsd/venv/bin/somsd check-config"):
            edit_config(root)
        command = mapped(step, root)
        if command is None:
            continue
        result = run(command)
        assert result.returncode == 0, f"{step!r} failed as {command!r}:\n{result.stderr}"

    uid = account_id(root, "passwd", "somsd")
    gid = account_id(root, "group", "somsd")
    etc = root / "etc" / "somsd"
    for path, mode, owner in (
        (etc, 0o750, (0, gid)),
        (etc / "somsd.toml", 0o640, (0, gid)),
        (etc / "admin.token", 0o600, (0, 0)),
    ):
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, *owner), path
    assert len((etc / "admin.token").read_text().strip()) >= 32

    # The somsd user reads its config (the 0750 folder lets its group in) but not the token.
    as_somsd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "cat"]
    readable = subprocess.run(
        [*as_somsd, str(etc / "somsd.toml")], capture_output=True, check=False
    )
    assert readable.returncode == 0, readable.stderr
    token = subprocess.run([*as_somsd, str(etc / "admin.token")], capture_output=True, check=False)
    assert token.returncode != 0

    unit = root / "etc" / "systemd" / "system" / "somsd.service"
    wanted = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "somsd.service"
    assert wanted.is_symlink()
    # Verify the installed unit; its ExecStart names the binary the steps installed.
    binary = root / "opt" / "somsd" / "venv" / "bin" / "somsd"
    checked = root / "verify" / "somsd.service"
    checked.parent.mkdir()
    checked.write_text(unit.read_text().replace("/opt/somsd/venv/bin/somsd", str(binary)))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=no", str(checked)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
