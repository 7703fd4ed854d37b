"""The ``keepa-ops`` command: one verb per notebook step, for shells and cron.

Invariant: a KeepaOpsError ends the command with exit status 2 and one line on
stderr naming the problem; nothing else is printed as a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import KeepaOpsError


def _fmt_s(v):
    if v is None:
        return "never"
    if v >= 3600:
        return f"{v / 3600:.1f}h"
    if v >= 60:
        return f"{v / 60:.1f}m"
    return f"{v:.0f}s"


def _print_sim(s: dict) -> None:
    print(f"policy {s['policy']}, {s['hours']:g} h at {s['refill_per_minute']:g} tokens/min; "
          f"starvation bound {_fmt_s(s['starvation_bound_s'])}")
    print(f"{'task':24} {'target':>7} {'first grant':>11} {'grants':>7} {'items':>7} "
          f"{'tokens':>8} {'max wait':>9}  starved")
    for name, t in s["tasks"].items():
        print(f"{name:24} {t['target']:>7g} {_fmt_s(t['first_grant_s']):>11} {t['grants']:>7} "
              f"{t['items']:>7} {t['tokens_spent']:>8g} {_fmt_s(t['max_no_progress_s']):>9}  "
              f"{'STARVED' if t['starved'] else 'no'}")
    f = s["freshness"]
    print(f"tokens refilled {s['tokens_refilled']:.0f}, spent {s['tokens_spent']:.0f}, "
          f"wasted at cap {s['tokens_wasted_at_cap']:.0f}")
    print(f"live freshness: p50 {_fmt_s(f['p50_s'])}, p95 {_fmt_s(f['p95_s'])}, max {_fmt_s(f['max_s'])} "
          f"({f['served']} upserted, {f['unserved']} still waiting)")
    print("starved: " + (", ".join(s["starved"]) if s["starved"] else "none"))


def cmd_simulate(args) -> int:
    from .simulate import simulate

    result = simulate(args.config, hours=args.hours)
    if args.events:
        result.events.write(args.events)
    s = result.summary()
    if args.json:
        print(json.dumps(s))
    else:
        _print_sim(s)
        if args.events:
            print(f"events: {len(result.events)} written to {args.events}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keepa-ops", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("simulate", help="run a config in virtual time")
    s.add_argument("config", help="YAML config")
    s.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--events", metavar="FILE", help="write the event log (.jsonl or .parquet)")
    s.set_defaults(func=cmd_simulate)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeepaOpsError as e:
        print(f"keepa-ops: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
