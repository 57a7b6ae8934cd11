"""Does ``convscope depth --timeout`` answer within its budget, and the same way at other seeds?

Runs ``convscope depth --data DIR --timeout DURATION --seed S`` once per seed (each in a fresh runs
folder, so every run pays its own decode unless --cache-dir is shared) and prints, per seed, the
wall time, the complete rounds of folds, why it stopped and the verdict; then whether the seeds agree.
Results go to stdout and, with --out, to a JSON file.

    python benchmarks/depth_budget.py --data ../shared/data/petimages-sample --timeout 12m --seeds 0
    python benchmarks/depth_budget.py --data /tmp/devset --timeout 15m --seeds 0 1 2 --out depth_budget.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402


def run_once(data: str, timeout: str, seed: int, cache_dir: str, extra: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="depth-budget-") as runs:
        command = [sys.executable, "-m", "convscope", "depth", "--data", data, "--timeout", timeout, "--seed", str(seed),
                   "--runs-dir", runs, "--no-tensorboard", *(["--cache-dir", cache_dir] if cache_dir else []), *extra]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.monotonic() - started
    out = done.stdout
    verdict = next((line for line in out.splitlines() if line.startswith(("recommended", "no recommendation",
                                                                         "provisional"))), "")
    depth = re.search(r"recommended depth: (\d+)", verdict)
    rounds = re.search(r"stopped after (\d+) complete round\(s\) of folds: (.*)", out)
    plan = re.search(r"plan: (\d+) epochs", out)
    return {"seed": seed, "exit": done.returncode, "seconds": round(seconds, 1),
            "epochs": int(plan.group(1)) if plan else None, "rounds": int(rounds.group(1)) if rounds else None,
            "stopped": rounds.group(2) if rounds else "", "recommended": int(depth.group(1)) if depth else None,
            "verdict": verdict, "stderr": done.stderr[-800:] if done.returncode else "",
            "output": out}  # the whole report (the table of every depth) to read the verdict against


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--timeout", default="12m")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache-dir", default="", help="a decode cache shared by the runs (default: each its own)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args, extra = parser.parse_known_args()
    print(f"machine: {device_description()}")
    print(f"command: convscope depth --data {args.data} --timeout {args.timeout} --seed S {' '.join(extra)}")
    results = []
    for seed in args.seeds:
        result = run_once(args.data, args.timeout, seed, args.cache_dir, extra)
        results.append(result)
        print(f"seed {seed}: {result['seconds']:.0f} s, exit {result['exit']}, {result['epochs']} epochs a fold run, "
              f"{result['rounds']} rounds ({result['stopped']})\n  {result['verdict']}", flush=True)
        if result["stderr"]:
            print(f"  stderr: {result['stderr']}")
    answers = {r["recommended"] for r in results}
    print(f"recommended depth per seed: {[r['recommended'] for r in results]} — "
          + ("the same at every seed" if len(answers) == 1 and None not in answers else "NOT the same at every seed"))
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": device_description(), "data": args.data,
                                              "timeout": args.timeout, "results": results}, indent=1))
    return 0 if all(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
