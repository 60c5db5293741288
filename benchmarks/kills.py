"""Issue 16 benchmark: a small pipeline SIGKILLed at many random moments, resumed after each, compared with an
uninterrupted run (`make test` does the same with 3 kills, one per step).

    python benchmarks/kills.py [--kills 20] [--seed 0] [--epochs 12]

The pipeline is tests/test_faults.py's (synthetic data, a user's TinyNet baseline, channel pruning and sparsity, each
fine-tuned, exported to ONNX) with a longer baseline training. A quarter of the kills is armed at each start (the baseline
step), the others once the journal holds 1, 2 or 3 finished steps; each fires a random 0-3 s later.
Results go to benchmarks/results/kills.json and the "kills" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from common import provenance, provenance_line, replace_doc_section, save_results  # noqa: E402
from faults import computed, first_difference, kill_and_resume, timed  # noqa: E402
from test_faults import command, small_pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs (more: more to interrupt)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        recipe = small_pipeline(folder)
        raw = yaml.safe_load(recipe.read_text())
        raw["baseline"]["train"]["epochs"] = args.epochs
        recipe.write_text(yaml.safe_dump(raw))
        reference_seconds = timed(command(recipe, folder / "reference"))
        started = time.perf_counter()
        journal = folder / "killed" / "faults" / "stages.jsonl"
        # a quarter of the kills in each step: armed at the start (the baseline), or once the journal holds 1, 2 or 3
        # finished steps, each firing a random 0-3 s later: in start-up, training, measurement and the export
        steps = [4 * index // args.kills for index in range(args.kills)]
        outcome = kill_and_resume(command(recipe, folder / "killed"), kills=args.kills, seed=args.seed, span=(0.0, 3.0), journal=journal,
                                  after_lines=steps)
        seconds = time.perf_counter() - started
        final = journal.read_text()
        reused = all(final.startswith(kept) for kept in outcome["journal_at_kills"])
        killed, reference = computed(folder / "killed" / "faults"), computed(folder / "reference" / "faults")
        difference = first_difference(killed, reference)
    steps = [kept.count("\n") for kept in outcome["journal_at_kills"]]
    results = provenance() | {"kills_asked": args.kills, "killed": outcome["killed"],
               "finished_before_its_kill": outcome["finished_before_its_kill"], "journal_lines_at_each_kill": steps,
               "finished_steps_reused": reused, "identical_to_uninterrupted": difference is None, "first_difference": difference,
               "reference_seconds": reference_seconds, "killed_run_seconds": seconds}
    save_results("kills", results)
    verdict = ("the journal, metrics, weights (tensor by tensor) and bundle files equal the uninterrupted run's"
               if difference is None else f"DIFFERENT: {difference}")
    replace_doc_section("kills", "\n".join([
        "### Random kills", "",
        f"{provenance_line(results)} **{outcome['killed']} SIGKILLs** at random moments "
        f"(seed {args.seed}, a quarter in each step, each 0-3 s after it was armed; {outcome['finished_before_its_kill']} "
        f"start(s) finished before their kill), "
        f"each followed by `--resume`. The steps finished at each kill (journal lines): {steps}. Finished steps were "
        f"{'reused, not recomputed' if reused else 'NOT all reused'}; at the end {verdict}. Not compared, because they are "
        "measured rather than computed: timings, memory, the machine, and a `.pt` file's sha256 (torch.save writes a random "
        f"id into every archive; the tensors are compared instead). Uninterrupted run {reference_seconds:.0f} s; killed and "
        f"resumed {seconds:.0f} s in all.",
    ]))
    print(results)
    sys.exit(0 if difference is None and reused else 1)


if __name__ == "__main__":
    main()
