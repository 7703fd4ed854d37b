"""The ``keepa-ops`` command: one verb per notebook step, for shells and cron.

Invariant: a KeepaOpsError ends the command with exit status 2 and one line on
stderr naming the problem; nothing else is printed as a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
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
    from .simulation.simulate import simulate

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


def cmd_run(args) -> int:
    from .live.runner import run_live
    from .core.schedule import parse_duration

    duration = parse_duration(args.duration, "--duration") if args.duration else None
    events = args.events or (str(args.db) + ".events.jsonl")
    result = run_live(args.config, args.db, keepa_url=args.keepa_url, duration=duration, speed=args.speed,
                      events_path=events, progress=None if args.quiet else sys.stderr, bucket=args.bucket,
                      tasks=args.task)
    s = result.summary()
    if args.json:
        print(json.dumps(s))
    else:
        where = "embedded fake Keepa" if s["embedded_fake_keepa"] else s["keepa_url"]
        print(f"ran {s['keepa_seconds'] / 60:.1f} Keepa-minutes against {where}"
              + (f", stopped by {s['stopped_by']}" if s["stopped_by"] else ""))
        for name, t in s["tasks"].items():
            print(f"  {name:24} {t['items']:>7} deals  {t['grants']:>6} grants  {t['tokens_spent']:>8g} tokens  "
                  f"longest wait {_fmt_s(t['max_wait_s'])}  429s {t['refused_429']}")
        stored = ", ".join(f"{v['deals']} {k}" for k, v in s["stored"].items()) or "nothing"
        print(f"  stored: {stored} in {s['db']}; {s['faults']} faults; events in {s['events']}")
    # stopped cleanly either way; Ctrl-C still says so to the shell (128 + SIGINT), a service's SIGTERM is a stop
    return 130 if s["stopped_by"] == "SIGINT" else 0


def cmd_fake_keepa(args) -> int:
    import signal
    import threading

    from .live.fake_server import FakeKeepa

    fake = FakeKeepa(args.refill_per_minute, args.start_tokens, stepped=args.refill == "stepped",
                     speed=args.speed, seed=args.seed, deals_per_hour=args.deals_per_hour,
                     pending=args.pending, backlog=args.backlog)
    url = fake.serve(args.port)
    print(f"fake Keepa listening on {url} (refill {args.refill_per_minute:g}/min, speed {args.speed:g}x)",
          flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    fake.shutdown()
    return 0


def _print_read(stats: dict) -> None:
    print(f"read {stats['files']} file(s), {stats['bytes'] / 1e6:.1f} MB, {stats['lines']} lines: "
          f"{stats['events']} token events, {stats['other']} other lines, {stats['continuation']} traceback lines, "
          f"{stats['skipped']} skipped" + (f", {stats['truncated_files']} truncated gzip" if stats["truncated_files"] else "")
          + (f", {stats['partial_last_lines']} partial last line(s)" if stats["partial_last_lines"] else ""),
          file=sys.stderr)
    for note in stats.get("skipped_paths", []):
        print(f"note: {note}", file=sys.stderr)
    if stats.get("time_outliers"):
        print(f"note: {stats['time_outliers']} line(s) dated far from their neighbours were re-timed "
              f"(e.g. {stats['time_outlier_lines'][0]})", file=sys.stderr)


def cmd_parse(args) -> int:
    from .logs.parser import parse_logs, write_parquet

    out = args.out
    if out and out.endswith(".parquet"):   # written as it is assembled: never the whole frame at once
        stats = write_parquet(args.logs, out)
        _print_read(stats)
    else:
        parsed = parse_logs(args.logs)
        stats = parsed.stats
        _print_read(stats)
        if out:
            parsed.events.to_csv(out, index=False)
    if out:
        print(f"wrote {stats['events']} events to {out}", file=sys.stderr)
    if args.json:
        print(json.dumps(stats))
    return 0


def cmd_diagnose(args) -> int:
    from .diagnosis import diagnose
    from .logs.parser import parse_logs
    from .core.schedule import parse_duration

    fail_on = _verdicts(args.fail_on)
    parsed = parse_logs(args.logs)
    if not args.json:
        _print_read(parsed.stats)
    d = diagnose(parsed, bound_s=parse_duration(args.bound, "--bound"), check=not args.no_check)
    if args.json:
        out = d.to_dict()
        out["read"] = parsed.stats
        print(json.dumps(out, default=str))
    else:
        print(d.report())
    return 1 if d.verdict in fail_on else 0


def _verdicts(text: str | None) -> set:
    """``--fail-on starvation,stall`` -> the verdicts, each checked against the known ones."""
    from .diagnosis import VERDICTS

    names = {v.strip() for v in (text or "").split(",") if v.strip()}
    unknown = sorted(names - set(VERDICTS))
    if unknown:
        raise KeepaOpsError(f"--fail-on: unknown verdict {', '.join(unknown)}. Fix: use any of "
                            f"{', '.join(VERDICTS)}, comma-separated.")
    return names


def cmd_replay(args) -> int:
    from .logs.parser import parse_logs
    from .diagnosis.replay import replay

    parsed = parse_logs(args.logs)
    alt = args.config if args.config else {"policy": args.policy}
    r = replay(parsed, alt, hours=args.hours)
    if args.json:
        print(json.dumps(r, default=str))
        return 0
    _print_read(parsed.stats)
    print(f"replayed {r['hours']:g} h of the logged demand")
    for a in r["assumptions"]:
        print(f"  assumption: {a}")
    print(f"{'task':24} {'logged: longest wait':>22} {'as logged (sim)':>16} {'replayed':>10}")
    for n, t in r["logged"]["tasks"].items():
        a = r["as_logged_simulated"]["tasks"].get(n, {})
        b = r["replayed"]["tasks"].get(n, {})
        print(f"{n:24} {_fmt_s(t['max_wait_s']):>22} {_fmt_s(a.get('max_no_progress_s')):>16} "
              f"{_fmt_s(b.get('max_no_progress_s')):>10}")
    print(f"starved: logged {r['logged']['starved'] or 'nobody'}; as logged (sim) "
          f"{r['as_logged_simulated']['starved'] or 'nobody'}; replayed {r['replayed']['starved'] or 'nobody'}")
    return 0


def cmd_sweep(args) -> int:
    from .planning.sweep import choose_config, sweep, write_fixed_schedule

    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # timeout and cron send SIGTERM: end the workers with us
    df = sweep(args.config, args.grid, hours=args.hours, workers=args.workers,
               progress=None if args.quiet else sys.stderr)
    if args.out:
        df.to_parquet(args.out, index=False) if args.out.endswith(".parquet") else df.to_csv(args.out, index=False)
    valid = df[df["valid"]]
    starved = valid[valid["starved"]]
    print(f"{len(df)} configs, {len(valid)} valid, {len(starved)} starve a task, "
          f"{int(df['pareto'].sum())} on the Pareto front" + (f"; table in {args.out}" if args.out else ""))
    for pol, g in valid.groupby("policy"):
        print(f"  {pol:10} {int(g['starved'].sum())}/{len(g)} starve")
    rec = choose_config(df, args.config)
    row = rec["row"]
    print(f"recommended #{rec['config_id']}: {rec['overrides']}")
    print(f"  rule: {rec['rule']}")
    print(f"  steady-state live p95 {_fmt_s(row['steady_p95_s'])}, backfill {row['backfill_per_day']:.0f} deals/day; "
          f"the refill allows {rec['bound'].get('backfill_bound_per_day', float('nan')):.0f}/day after live demand "
          f"({100 * (rec['backfill_share_of_bound'] or 0):.1f}%)")
    if args.recommend:
        write_fixed_schedule(rec, args.recommend)
        print(f"  fixed schedule written to {args.recommend} (keepa-ops run --config {args.recommend})")
    return 0


def cmd_pipeline(args) -> int:
    from .reports.pipeline import run_pipeline

    run = run_pipeline(logs=args.logs, out=args.out, config=args.config, grid=args.grid, hours=args.hours,
                       duration=args.duration, speed=args.speed, keepa_url=args.keepa_url,
                       log=lambda m: print(m, file=sys.stderr), keep=args.keep)
    print(f"pipeline {run.outcome}: reports in {run.out}/")
    for s in run.steps:
        print(f"  {s['html']}")
    print(f"  index of past runs: {run.out.parent / 'index.html'}")
    return 0


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


# -- argument types: a bad value is one line naming the flag, before anything runs ---------------
def _number_arg(text: str, *, integer=False, minimum=None, strict=False, what="a number"):
    try:
        v = int(text) if integer else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not math.isfinite(v) or (minimum is not None and (v < minimum or (strict and v == minimum))):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def _positive(text):
    return _number_arg(text, minimum=0, strict=True, what="a finite number > 0")


def _nonnegative(text):
    return _number_arg(text, minimum=0, what="a finite number >= 0")


def _finite(text):
    return _number_arg(text, what="a finite number")


def _positive_int(text):
    return _number_arg(text, integer=True, minimum=1, what="a whole number >= 1")


def _nonnegative_int(text):
    return _number_arg(text, integer=True, minimum=0, what="a whole number >= 0")


def _port(text):
    v = _number_arg(text, integer=True, minimum=0, what="a port number 0-65535")
    if v > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``keepa-ops: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"keepa-ops: error: {message}. Fix: see `{self.prog} --help`.\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="keepa-ops", description=__doc__.splitlines()[0].replace("``", ""))
    p.add_argument("--version", action="version", version=f"keepa-ops {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)

    s = sub.add_parser("simulate", help="run a config in virtual time")
    s.add_argument("config", help="YAML config")
    s.add_argument("--hours", type=_positive, default=24.0, help="simulated hours (default 24)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--events", metavar="FILE", help="write the event log (.jsonl or .parquet)")
    s.set_defaults(func=cmd_simulate)

    r = sub.add_parser("run", help="run a config live against Keepa (or the embedded fake)")
    r.add_argument("--config", required=True, help="YAML config")
    r.add_argument("--db", default="keepa_ops.sqlite", help="SQLite deals store (default keepa_ops.sqlite)")
    r.add_argument("--keepa-url", help="Keepa base URL; omit (with no KEEPA_API_KEY) for the embedded fake")
    r.add_argument("--duration", help="stop after this much Keepa time (e.g. 2h); default: until a signal")
    r.add_argument("--speed", type=_positive, default=1.0, help="run the clock K times faster (fake Keepa only)")
    r.add_argument("--events", metavar="FILE", help="event log, JSON lines (default DB.events.jsonl)")
    r.add_argument("--json", action="store_true", help="print one JSON summary")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.add_argument("--bucket", metavar="URL", help="share the key's bucket and policy with other processes: "
                   "sqlite:///path/bucket.db (one host) or redis://host:port/db (several); default: this process's own")
    r.add_argument("--task", action="append", metavar="NAME", help="run only this task (repeatable); "
                   "default: every task of the config")
    r.set_defaults(func=cmd_run)

    pa_ = sub.add_parser("parse", help="parse production logs into a table of token events")
    pa_.add_argument("logs", nargs="+", help="log files or directories (rotated sets and .gz are fine)")
    pa_.add_argument("--out", help="write the events as .parquet or .csv")
    pa_.add_argument("--json", action="store_true", help="print what was read as JSON")
    pa_.set_defaults(func=cmd_parse)

    d = sub.add_parser("diagnose", help="who starved whom, why, and what to change")
    d.add_argument("logs", nargs="+", help="log files or folders: any mix of the legacy formats, our JSON "
                                          "lines, rotated sets and .gz")
    d.add_argument("--bound", default="1h", help="starvation bound (default 1h)")
    d.add_argument("--json", action="store_true", help="print the diagnosis as one JSON object")
    d.add_argument("--fail-on", metavar="VERDICT[,VERDICT]",
                   help="exit 1 when the verdict is one of these (for cron and monitoring), e.g. starvation,stall")
    d.add_argument("--no-check", action="store_true", help="do not re-simulate the recommendation")
    d.set_defaults(func=cmd_diagnose)

    rp = sub.add_parser("replay", help="re-run the logged demand under another config or policy")
    rp.add_argument("logs", nargs="+", help="log files or folders, as for diagnose")
    rp.add_argument("--config", help="YAML: a full config, or only the keys to change (e.g. policy: priority)")
    rp.add_argument("--policy", default="priority", help="policy to replay under when no --config is given")
    rp.add_argument("--hours", type=_positive, help="simulated hours (default: the log's span, at least 24)")
    rp.add_argument("--json", action="store_true", help="print the logged and the replayed run as one JSON object")
    rp.set_defaults(func=cmd_replay)

    sw = sub.add_parser("sweep", help="simulate a grid of configs and recommend the fixed schedule")
    sw.add_argument("--config", required=True, help="base YAML config")
    sw.add_argument("--grid", required=True, help="YAML: dotted config keys -> lists of values")
    sw.add_argument("--hours", type=_positive, default=168.0, help="simulated hours per config (default 168)")
    sw.add_argument("--out", help="write the table (.parquet or .csv)")
    sw.add_argument("--recommend", metavar="FIXED_YAML", help="write the recommended config here")
    sw.add_argument("--workers", type=_positive_int, help="processes (default: all cores)")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=cmd_sweep)

    pl = sub.add_parser("pipeline", help="run the notebooks 01-04 with papermill and keep HTML reports")
    pl.add_argument("--logs", nargs="+", help="production logs (default: the sample logs keepa-ops ships)")
    pl.add_argument("--out", help="run folder; every file of the run goes under it (default: runs/<UTC timestamp>)")
    pl.add_argument("--keep", type=_positive_int, metavar="N", help="keep only the newest N runs beside this one "
                    "(older run folders listed in index.json are deleted); default: keep all")
    pl.add_argument("--config", help="base config for the sweep (default: the one rebuilt from the logs)")
    pl.add_argument("--grid", help="sweep grid (default: the pipeline grid keepa-ops ships)")
    pl.add_argument("--hours", type=_positive, default=168.0, help="simulated hours per swept config")
    pl.add_argument("--duration", default="3h", help="Keepa time to run the fixed schedule for")
    pl.add_argument("--speed", type=_positive, default=720.0, help="clock speed-up for the run (fake Keepa only)")
    pl.add_argument("--keepa-url", help="run against this Keepa (needs KEEPA_API_KEY); default: embedded fake")
    pl.set_defaults(func=cmd_pipeline)

    f = sub.add_parser("fake-keepa", help="serve the fake Keepa API on 127.0.0.1")
    f.add_argument("--port", type=_port, default=0, help="port (default: any free port)")
    f.add_argument("--refill-per-minute", type=_positive, default=5.0, help="tokens per minute")
    f.add_argument("--start-tokens", type=_finite, default=None, help="default: a full bucket")
    f.add_argument("--refill", choices=("continuous", "stepped"), default="continuous",
                   help="continuous (Keepa's default) or stepped (the whole minute's tokens at once)")
    f.add_argument("--speed", type=_positive, default=1.0, help="clock K times faster than the wall")
    f.add_argument("--deals-per-hour", type=_nonnegative, default=60.0, help="new deals per hour")
    f.add_argument("--pending", type=_nonnegative_int, default=300, help="deals already published at start")
    f.add_argument("--backlog", type=_nonnegative_int, default=10_000, help="historical deals (dateRange >= 1)")
    f.add_argument("--seed", type=int, default=7, help="the deal stream's seed")
    f.set_defaults(func=cmd_fake_keepa)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (KeepaOpsError, ValueError) as e:  # a ValueError that got this far is still bad input: one line
        print(f"keepa-ops: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
