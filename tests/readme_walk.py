"""The README's walk, run for real against the sandbox, and the outputs the documents show.

The README marks its walk with ``<!-- walk -->`` before a ```console block: lines starting with
``$ `` are commands, the lines after each are what it printed (a last line ``…`` shows only
the first lines of a long output). A runbook shows what a command printed in that same run
with ``<!-- walk-output: <command> -->`` before a plain fenced block (``migrate plan``, ...).

Later situations a runbook shows (re-pointing to another Procore project) are FOLLOW_ON steps,
run in the walk's folder before its last command stops the sandbox; a runbook names them
(``<!-- walk-output: repoint: migrate plan -->``).

The walk runs as written, in one bash shell, from the repository folder (where
``source .venv/bin/activate`` works) with HOME set to a temporary folder, so its ``~/...``
folder is fresh. What each command printed on stdout is compared with what is shown after
the volatile parts are normalised (ports, pids, seconds, times, whitespace runs); progress on
stderr is not shown.

    python -m tests.readme_walk           # run the walk, print what differs (exit 1 if any)
    python -m tests.readme_walk --write   # run it and rewrite the shown outputs (make docs)

``tests/test_readme_walk.py`` runs the check.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
#: The documents whose shown outputs come from the walk: the README first (it has the walk).
DOCUMENTS = (README, *sorted((REPO / "runbooks").glob("*.md")))

WALK_MARK = "<!-- walk -->"
OUTPUT_MARK = re.compile(r"<!-- walk-output: (?P<command>.+?) -->")
PROMPT = "$ "
ELLIDED = "…"
#: How the walk's home folder is shown in the documents.
SHOWN_HOME = "/home/you"
#: Separates the commands' outputs on the walk's stdout (a control character no output has).
SEPARATOR = "\x1e"
#: Environment a reader of the README would not have set: the walk must not depend on it.
FOREIGN_ENV = re.compile(r"^(MIGRATE_|BIM360_FIELD_|PROCORE_)")
WALK_TIMEOUT_SECONDS = 600

#: Lines counting requests: on a busy machine a request may arrive late enough for Procore
#: to answer 429 once, and the retry adds to every count on the line.
_REQUEST_COUNTS = re.compile(r"^\s*(Requests to |Quota )")

_VOLATILE = [
    (re.compile(r"\b(127\.0\.0\.1|localhost):\d+"), r"\1:<port>"),
    (re.compile(r"\bpid \d+"), "pid <n>"),
    (re.compile(r"\b\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?Z?"), "<time>"),
    (re.compile(r"\b\d+(\.\d+)? s\b"), "<n> s"),
    (re.compile(r"[ \t]+"), " "),
]


@dataclass
class Step:
    """One command of the walk and the output the README shows for it."""

    command: str
    shown: list[str]
    printed: list[str] = field(default_factory=list)
    exit_code: int | None = None
    #: A step the README does not show (FOLLOW_ON): its name, and the exit codes it expects.
    name: str | None = None
    expected_exit: tuple[int, ...] = (0, 3)

    @property
    def key(self) -> str:
        """How a runbook names it: the command without its trailing comment, or the name."""
        return self.name or self.command.split("  #", 1)[0].strip()

    @property
    def shown_in_readme(self) -> bool:
        return self.name is None


CATCH_UP_SHOW = (
    "--show create --show update --show status_change --show deleted_at_source "
    "--show attachments_after_load"
)


def _edit_config(old: str, new: str) -> str:
    """A shell command replacing `old` by `new` in migration.toml (as $EDITOR would)."""
    code = (
        "import pathlib; p = pathlib.Path('migration.toml'); "
        f"p.write_text(p.read_text().replace({old!r}, {new!r}))"
    )
    return f"python -c {shlex.quote(code)}"


#: Later situations the runbooks show, run after the README's walk in its folder (before
#: its last command, which stops the sandbox): (name, command, expected exit codes).
FOLLOW_ON = (
    # Runbook 02: a catch-up after a day of changes at the source.
    ("catch-up: migrate sandbox change", "migrate sandbox change", (0,)),
    ("catch-up: migrate extract", "migrate extract", (0, 3)),
    ("catch-up: migrate transform", "migrate transform", (0, 3)),
    ("catch-up: migrate plan --show", f"migrate plan {CATCH_UP_SHOW}", (0, 3)),
    ("catch-up: migrate load", "migrate load", (0, 3)),
    ("catch-up: migrate load --apply-deletions", "migrate load --apply-deletions", (0, 3)),
    # Runbook 05: re-point to Procore project 5101 (the sandbox's second project), which is
    # a new migration in a staging DB of its own.
    ("repoint: edit project_id", _edit_config("project_id = 5100", "project_id = 5101"), (0,)),
    ("repoint: migrate plan", "migrate plan 2>&1", (2,)),
    (
        "repoint: edit staging path",
        _edit_config('path = "staging.db"', 'path = "staging-5101.db"'),
        (0,),
    ),
    ("repoint: edit blobs", _edit_config('blobs = "blobs"', 'blobs = "blobs-5101"'), (0,)),
    ("repoint: migrate extract", "migrate extract", (0, 3)),
    ("repoint: migrate transform", "migrate transform", (0, 3)),
    ("repoint: migrate plan after transform", "migrate plan", (0, 3)),
)


@dataclass
class Block:
    """A fenced block of a document whose content comes from the walk."""

    document: Path
    #: Index of the opening fence line and of the closing one.
    start: int
    end: int
    indent: str
    #: None for the walk itself; else the command whose output the block shows.
    output_of: str | None
    lines: list[str]


def _blocks(document: Path, lines: list[str]) -> list[Block]:
    found = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        output = OUTPUT_MARK.fullmatch(stripped)
        if stripped != WALK_MARK and output is None:
            continue
        opening = index + 1
        fence = lines[opening] if opening < len(lines) else ""
        if not fence.strip().startswith("```"):
            raise ValueError(f"{document}:{index + 1}: {stripped} is not followed by a ``` block")
        indent = fence[: len(fence) - len(fence.lstrip())]
        end = next((i for i in range(opening + 1, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{document}:{opening + 1}: the ``` block is not closed")
        content = [
            line[len(indent) :] if line.startswith(indent) else line.lstrip()
            for line in lines[opening + 1 : end]
        ]
        found.append(
            Block(
                document=document,
                start=opening,
                end=end,
                indent=indent,
                output_of=output.group("command") if output else None,
                lines=content,
            )
        )
    return found


def walk_steps(block: Block) -> list[Step]:
    steps: list[Step] = []
    for line in block.lines:
        if line.startswith(PROMPT):
            steps.append(Step(command=line[len(PROMPT) :], shown=[]))
        elif not steps:
            raise ValueError(
                f"{block.document}:{block.start + 2}: the walk must start with a $ line"
            )
        else:
            steps[-1].shown.append(line)
    return steps


def read_documents() -> tuple[list[Step], list[Block]]:
    """The README's walk steps and every block that shows a walk output."""
    walk: list[Step] = []
    outputs: list[Block] = []
    for document in DOCUMENTS:
        for block in _blocks(document, document.read_text(encoding="utf-8").splitlines()):
            if block.output_of is None:
                if document != README:
                    raise ValueError(f"{document}: only the README has the walk")
                walk += walk_steps(block)
            else:
                outputs.append(block)
    if not walk:
        raise ValueError(f"{README} has no {WALK_MARK} block")
    follow_on = [
        Step(command=command, shown=[], name=name, expected_exit=codes)
        for name, command, codes in FOLLOW_ON
    ]
    last = len(walk) - 1 if walk[-1].key == "migrate sandbox stop" else len(walk)
    return walk[:last] + follow_on + walk[last:], outputs


def normalise(lines: list[str]) -> list[str]:
    """The lines with their volatile parts replaced, for comparison."""
    result = []
    for line in lines:
        if _REQUEST_COUNTS.match(line):
            line = re.sub(r"\d+", "<n>", line)
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        result.append(line.strip())
    while result and not result[-1]:
        result.pop()
    return result


def matches(shown: list[str], printed: list[str]) -> bool:
    """Whether `printed` is what `shown` shows (only its first lines when it ends with …)."""
    if shown and shown[-1].strip() == ELLIDED:
        head = normalise(shown[:-1])
        return normalise(printed)[: len(head)] == head
    return normalise(shown) == normalise(printed)


def _activate_folder(scratch: Path) -> Path:
    """The folder to start the walk in: one where `source .venv/bin/activate` works.

    The repository folder when it has that venv (make demo made it); else a stand-in whose
    activate script puts this interpreter's `migrate` on the PATH.
    """
    if (REPO / ".venv" / "bin" / "activate").is_file():
        return REPO
    stand_in = scratch / "repository"
    bin_dir = stand_in / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    scripts = Path(sys.executable).parent
    (bin_dir / "activate").write_text(f'export PATH="{scripts}:$PATH"\n', encoding="utf-8")
    return stand_in


def run_walk(steps: list[Step], scratch: Path) -> str:
    """Run the steps in one bash shell; fill in what each printed and its exit code.

    Returns what the walk printed on stderr (progress, errors), for a failure's message.
    """
    home = scratch / "home"
    home.mkdir()
    script = []
    for number, step in enumerate(steps):
        script.append(f"printf '{SEPARATOR}step {number}\\n'")
        script.append(step.command)
        script.append(f"printf '{SEPARATOR}exit %d\\n' \"$?\"")
    env = {key: value for key, value in os.environ.items() if not FOREIGN_ENV.match(key)}
    env.update(HOME=str(home), COLUMNS="200", PYTHONIOENCODING="utf-8")
    env.pop("VIRTUAL_ENV", None)
    try:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=_activate_folder(scratch),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=WALK_TIMEOUT_SECONDS,
        )
    finally:
        _stop_sandboxes(home)
    current: Step | None = None
    # split("\n"), not splitlines(): that splits at the separator too.
    for line in done.stdout.replace(str(home), SHOWN_HOME).split("\n"):
        if line.startswith(SEPARATOR + "step "):
            current = steps[int(line.split()[-1])]
        elif line.startswith(SEPARATOR + "exit ") and current is not None:
            current.exit_code = int(line.split()[-1])
        elif current is not None:
            current.printed.append(line.rstrip())
    for step in steps:
        while step.printed and not step.printed[-1]:
            step.printed.pop()
    return done.stderr.replace(str(home), SHOWN_HOME)


def _stop_sandboxes(home: Path) -> None:
    """End a sandbox the walk left running (it stops it itself when it gets that far)."""
    for state in home.rglob(".migrate-sandbox.json"):
        try:
            pid = int(json.loads(state.read_text(encoding="utf-8"))["pid"])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass


def problems(steps: list[Step], outputs: list[Block], stderr: str = "") -> list[str]:
    """What the documents show that the run did not print, each with a diff."""
    found = []
    by_key = {step.key: step for step in steps}
    for step in steps:
        if step.exit_code not in step.expected_exit:
            found.append(
                f"README walk: `{step.command}` exited {step.exit_code}:\n"
                + "\n".join(step.printed + stderr.splitlines()[-20:])
            )
            stderr = ""  # the first failure's message has the end of it
        elif step.shown_in_readme and not matches(step.shown, step.printed):
            found.append(f"README walk: `{step.command}`:\n" + _diff(step.shown, step.printed))
    for block in outputs:
        step = by_key.get(block.output_of or "")
        where = f"{_name(block.document)}:{block.start}"
        if step is None:
            found.append(f"{where}: the README walk has no command `{block.output_of}`")
        elif not matches(block.lines, step.printed):
            found.append(f"{where} (`{step.key}`):\n" + _diff(block.lines, step.printed))
    return found


def _name(document: Path) -> str:
    return str(document.relative_to(REPO)) if document.is_relative_to(REPO) else str(document)


def _diff(shown: list[str], printed: list[str]) -> str:
    return "\n".join(
        difflib.unified_diff(
            normalise(shown), normalise(printed), "shown", "printed (normalised)", lineterm=""
        )
    )


def _shown_form(shown: list[str], printed: list[str]) -> list[str]:
    """What to show for `printed`: as many first lines as before when the block was cut.

    A shown output that still matches is kept as it is, so a rewrite changes only what the
    commands now print differently (not every port, pid and time).
    """
    if matches(shown, printed):
        return shown
    if shown and shown[-1].strip() == ELLIDED:
        return printed[: len(shown) - 1] + [ELLIDED]
    return printed


def rewrite(steps: list[Step], outputs: list[Block]) -> list[Path]:
    """Write every shown output from the run; returns the documents changed."""
    by_key = {step.key: step for step in steps}
    replacements: dict[Path, list[tuple[int, int, list[str]]]] = {}
    walk_lines: list[str] = []
    for step in filter(lambda step: step.shown_in_readme, steps):
        walk_lines.append(PROMPT + step.command)
        walk_lines += _shown_form(step.shown, step.printed)
    readme_lines = README.read_text(encoding="utf-8").splitlines()
    walk_block = next(b for b in _blocks(README, readme_lines) if b.output_of is None)
    replacements[README] = [(walk_block.start, walk_block.end, walk_lines)]
    for block in outputs:
        step = by_key[block.output_of or ""]
        content = _shown_form(block.lines, step.printed)
        content = [block.indent + line if line else "" for line in content]
        replacements.setdefault(block.document, []).append((block.start, block.end, content))
    changed = []
    for document, edits in replacements.items():
        text = document.read_text(encoding="utf-8")
        lines = text.splitlines()
        for start, end, content in sorted(edits, reverse=True):
            lines[start + 1 : end] = content
        new_text = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
        if new_text != text:
            document.write_text(new_text, encoding="utf-8")
            changed.append(document)
    return changed


def main(argv: list[str]) -> int:
    if shutil.which("bash") is None:
        print("The walk needs bash (Linux, macOS, WSL or Git Bash).", file=sys.stderr)
        return 2
    steps, outputs = read_documents()
    with tempfile.TemporaryDirectory(prefix="readme-walk-") as scratch:
        stderr = run_walk(steps, Path(scratch))
    if "--write" in argv:
        failed = [s for s in steps if s.exit_code not in s.expected_exit]
        if failed:
            print("\n".join(problems(failed, [], stderr)), file=sys.stderr)
            return 1
        for document in rewrite(steps, outputs):
            print(f"Rewrote {_name(document)}")
        return 0
    found = problems(steps, outputs, stderr)
    for problem in found:
        print(problem, end="\n\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
