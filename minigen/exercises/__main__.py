"""Command line: ``python -m minigen.exercises {list, start, check}``.

list                          the exercises, one line each
start NAME DIR [--force]      write DIR/NAME.py: the maths, the shapes and stubs to fill in
                              (an existing file is never overwritten without --force)
check NAME FILE [--format text|json|gradescope] [--json] [--examples N] [--seed S] [--device D]
                              run the checks; exit status 0 when all pass, 1 otherwise.
                              --format json (or --json): the results for autograders;
                              --format gradescope: Gradescope's results.json on stdout
                              (one test per check, 1 point each, and the total score)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from minigen.exercises import EXERCISES, get


def _list() -> int:
    width = max(len(name) for name in EXERCISES)
    for number, (name, module) in enumerate(EXERCISES.items(), start=1):
        print(f"{number:>2}. {name:<{width}}  {module.TITLE}  ({module.TOPIC})")
    print("\nstart one with:  python -m minigen.exercises start NAME DIR")
    return 0


def _start(name: str, directory: str, force: bool) -> int:
    exercise = get(name)
    target = Path(directory) / f"{exercise.NAME}.py"
    if target.exists() and not force:
        print(
            f"error: {target} already exists; it may hold your work, so it was not overwritten.\n"
            "Choose another directory, or pass --force to replace it with a fresh template.",
            file=sys.stderr,
        )
        return 1
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(exercise.TEMPLATE, encoding="utf-8")
    print(f"wrote {target}\nfill in the stubs, then run:  python -m minigen.exercises check {exercise.NAME} {target}")
    return 0


def _check(name: str, file: str, output_format: str, examples: int, seed: int | None, device: str) -> int:
    from minigen.exercises.checker import check_file

    report = check_file(get(name), file, max_examples=examples, seed=seed, device=device)
    if output_format == "gradescope":
        print(json.dumps(report.to_gradescope(), indent=2, ensure_ascii=False))
    elif output_format == "json":
        print(report.to_json())
    else:
        print(report.text())
    return 0 if report.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigen.exercises", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the exercises")
    start = commands.add_parser("start", help="write a fresh exercise file to fill in")
    start.add_argument("name", help="exercise name (see list)")
    start.add_argument("directory", help="where to write NAME.py (created if needed)")
    start.add_argument("--force", action="store_true", help="overwrite an existing file")
    check = commands.add_parser("check", help="check your solution")
    check.add_argument("name", help="exercise name (see list)")
    check.add_argument("file", help="your solution file")
    check.add_argument(
        "--format",
        choices=("text", "json", "gradescope"),
        default="text",
        help="text (default), json (machine-readable), or gradescope (Gradescope's results.json)",
    )
    check.add_argument("--json", action="store_true", help="the same as --format json")
    check.add_argument("--examples", type=int, default=10, help="how many generated inputs (default 10)")
    check.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: fixed, reproducible)")
    check.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _list()
        if args.command == "start":
            return _start(args.name, args.directory, args.force)
        output_format = "json" if args.json else args.format
        return _check(args.name, args.file, output_format, args.examples, args.seed, args.device)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
