"""Issue 16 benchmark: the recipe front door fuzzed longer than `make test` does.

    python benchmarks/fuzz.py [--examples 400]

Runs tests/test_fuzz.py with --examples generated cases per property (mutated shipped recipes, raw bytes, --set
strings; `make test` runs 100 each) plus its fixed cases (YAML alias bomb, deep nesting, a bad encoding, the shipped
recipes' round trips), counts the cases hypothesis ran from its statistics, and writes benchmarks/results/fuzz.json
and the "fuzz" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, provenance, provenance_line, replace_doc_section, save_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=400, help="generated cases per property")
    args = parser.parse_args()
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
                          str(ROOT / "tests" / "test_fuzz.py")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "UDACISENSE_FUZZ_EXAMPLES": str(args.examples)})
    seconds = time.perf_counter() - started
    print(run.stdout[-3000:])
    phases = re.findall(r"- (\d+) passing, (\d+) failing, and (\d+) invalid test cases", run.stdout)  # per property and phase
    generated = sum(int(passing) + int(failing) for passing, failing, _ in phases)
    failing = sum(int(count) for _, count, _ in phases)
    properties = len(re.findall(r"^tests/test_fuzz.py::\S+:$", run.stdout, flags=re.M))
    summary = re.search(r"(\d+) passed", run.stdout), re.search(r"(\d+) failed", run.stdout)
    passed, failed = (int(match.group(1)) if match else 0 for match in summary)
    fixed = passed + failed - properties  # the parametrized, non-generated tests
    results = provenance() | {"examples_per_property": args.examples, "generated_cases": generated, "failing_cases": failing,
               "fixed_cases": fixed, "tests_passed": passed, "tests_failed": failed, "seconds": seconds, "exit_status": run.returncode}
    save_results("fuzz", results)
    verdict = "every case gave exit status 0 or one line and exit status 2" if run.returncode == 0 else "FAILURES: see the pytest output"
    replace_doc_section("fuzz", "\n".join([
        "### Fuzzed recipes", "",
        f"{provenance_line(results)} **{generated:,} generated cases** (mutated shipped recipes, "
        f"raw bytes, `--set` strings; {args.examples} per property) and {fixed} fixed ones (YAML alias bomb, 5,000-deep nesting, a "
        f"non-UTF-8 file, the shipped recipes' load -> resolve -> dump -> load round trips) through `udacisense check`, in {seconds:.0f} s: "
        f"{verdict}. `make test` runs the same properties with 100 cases each.",
    ]))
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
