"""Run the benchmarks: ``python -m bench [name ...] [-- options for each]``.

Every module ``bench/<name>_bench.py`` that defines ``main(argv)`` is a benchmark; a new one
registers itself just by existing. ``bench/scenarios.py`` (the whole pipeline at several sizes)
is one too, named ``scenarios``. Without names, all run in alphabetical order.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

SUFFIX = "_bench"
#: Benchmarks whose module name does not end in SUFFIX: name -> module file stem.
EXTRA = {"scenarios": "scenarios"}


def available() -> dict[str, str]:
    """Benchmark name -> module name, e.g. {"extract": "bench.extract_bench"}."""
    folder = Path(__file__).resolve().parent
    found = {
        path.stem[: -len(SUFFIX)]: f"bench.{path.stem}" for path in folder.glob(f"*{SUFFIX}.py")
    }
    found.update(
        {name: f"bench.{stem}" for name, stem in EXTRA.items() if (folder / f"{stem}.py").exists()}
    )
    return dict(sorted(found.items()))


def main(argv: list[str]) -> int:
    names, passed = argv, []
    if "--" in argv:
        cut = argv.index("--")
        names, passed = argv[:cut], argv[cut + 1 :]
    known = available()
    unknown = [name for name in names if name not in known]
    if unknown:
        print(
            f"Error: no benchmark named {', '.join(unknown)}; available: "
            f"{', '.join(known) or 'none'}.",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name in names or list(known):
        module = importlib.import_module(known[name])
        entry = getattr(module, "main", None)
        if entry is None:
            continue
        print(f"== {name}", flush=True)
        takes_argv = bool(inspect.signature(entry).parameters)
        code = entry(list(passed)) if takes_argv else entry()
        status = status or int(code or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
