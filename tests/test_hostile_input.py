"""Bad input, each case as an operator would type it: a non-zero exit, one line naming the problem and
its fix, no traceback, and foreign or existing data unchanged."""
import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keepa_ops import ConfigError, parse_config, simulate
from tests.conftest import DATA, ROOT


def cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("KEEPA_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "keepa_ops.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def assert_one_line(p, *words):
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("[keepa-ops]")]
    assert p.returncode == 2, (p.returncode, p.stderr[-800:])
    assert "Traceback" not in p.stderr, p.stderr[-800:]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("keepa-ops: error: ") and "Fix:" in lines[0], lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


def seed(**changes):
    raw = yaml.safe_load((DATA / "seed_incident.yaml").read_text())
    for dotted, v in changes.items():
        node = raw
        *path, last = dotted.split(".")
        for k in path:
            node = node[k]
        node[last] = v
    return raw


CONFIGS = [  # (the config file's text, words its one line must hold)
    ("refill_per_minute: 5\ntasks:\n  a: {role: upserter}\n  a: {role: backfiller}\n", ["'a'", "twice"]),
    (yaml.safe_dump(seed(refill_per_minute=float("inf"))), ["refill_per_minute", "finite"]),
    (yaml.safe_dump(seed(starvation_bound=float("nan"))), ["starvation_bound", "finite"]),
    (yaml.safe_dump(seed(**{"tasks.update_recent_deals.batch_size": float("inf")})), ["batch_size", "finite"]),
    (yaml.safe_dump(seed(**{"tasks.update_recent_deals.every": float("nan")})), ["every", "finite"]),
    (yaml.safe_dump(seed(**{"tasks.update_recent_deals.max_wait": -5})), ["max_wait", "> 0"]),
    (yaml.safe_dump(seed(**{"tasks.update_recent_deals.every": "0 0 30 2 *"})), ["every", "never fires"]),
    (yaml.safe_dump(seed(**{"tasks.update_recent_deals.batch_size": 500})), ["batch_size", "<= 100"]),
    (yaml.safe_dump(seed(**{"workload.pending_new_deals": 10 ** 12})), ["pending_new_deals", "<="]),
    (yaml.safe_dump({**seed(), "keepa": {"timeout": 0}}), ["keepa.timeout", "> 0"]),
    (yaml.safe_dump({**seed(), "keepa": {"url": 5}}), ["keepa.url", "text"]),
    (yaml.safe_dump({**seed(), "keepa": {"url": "api.keepa.com"}}), ["keepa.url", "http"]),
    (yaml.safe_dump({**seed(), "keepa": {"backoff": -1}}), ["keepa.backoff", ">= 0"]),
]


@pytest.mark.parametrize("text, words", CONFIGS, ids=[w[0] + "-" + w[1] for _, w in CONFIGS])
def test_a_bad_config_is_one_line_naming_the_field(tmp_path, text, words):
    (tmp_path / "c.yaml").write_text(text)
    assert_one_line(cli("simulate", "c.yaml", "--hours", "1", cwd=tmp_path), *words)


def test_a_config_path_that_is_not_a_yaml_file_is_one_line(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00not text")
    assert_one_line(cli("simulate", tmp_path, "--hours", "1", cwd=tmp_path), "is a directory")
    assert_one_line(cli("simulate", "bin.yaml", "--hours", "1", cwd=tmp_path), "not UTF-8")
    assert_one_line(cli("simulate", "no:such.yaml", "--hours", "1", cwd=tmp_path), "does not exist")


@pytest.mark.parametrize("args, words", [
    (["run", "--config", DATA / "seed_incident.yaml", "--speed", "0"], ["--speed", "> 0"]),
    (["run", "--config", DATA / "seed_incident.yaml", "--speed", "-1"], ["--speed"]),
    (["run", "--config", DATA / "seed_incident.yaml", "--speed", "nan"], ["--speed"]),
    (["run", "--config", DATA / "seed_incident.yaml", "--speed", "inf"], ["--speed"]),
    (["simulate", DATA / "seed_incident.yaml", "--hours", "-5"], ["--hours"]),
    (["simulate", DATA / "seed_incident.yaml", "--hours", "nan"], ["--hours"]),
    (["sweep", "--config", DATA / "seed_incident.yaml", "--grid", DATA / "seed_grid.yaml", "--hours", "0"],
     ["--hours"]),
    (["fake-keepa", "--port", "70000"], ["--port"]),
])
def test_a_bad_number_on_the_command_line_is_refused_before_anything_runs(tmp_path, args, words):
    assert_one_line(cli(*args, cwd=tmp_path), *words)
    assert list(tmp_path.iterdir()) == []  # nothing was written


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_db_that_is_not_ours_is_refused_and_left_unchanged(tmp_path):
    foreign = tmp_path / "theirs.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE deals (x)")  # a name we use, in someone else's schema
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.commit()
    con.close()
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"SQLite format 2\x00" + b"\x07" * 200)
    before = {p: _digest(p) for p in (foreign, corrupt)}
    cfg = DATA / "seed_incident.yaml"
    assert_one_line(cli("run", "--config", cfg, "--db", foreign, "--duration", "1m", "--quiet", cwd=tmp_path),
                    "not a keepa-ops deals store", "unchanged")
    assert_one_line(cli("run", "--config", cfg, "--db", corrupt, "--duration", "1m", "--quiet", cwd=tmp_path),
                    "not a SQLite database", "unchanged")
    assert_one_line(cli("run", "--config", cfg, "--db", tmp_path, "--duration", "1m", "--quiet", cwd=tmp_path),
                    "is a directory")
    assert {p: _digest(p) for p in (foreign, corrupt)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.sqlite", "theirs.sqlite"]


def test_our_own_db_opens_again_and_says_it_is_ours(tmp_path):
    db = tmp_path / "d.sqlite"
    for _ in range(2):
        p = cli("run", "--config", DATA / "seed_incident.yaml", "--db", db, "--duration", "2m", "--speed", "60", "--quiet",
                cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    from keepa_ops.live.store import APPLICATION_ID
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    con.close()


# -- property: every config mapping is either refused, naming a field, or simulates -----------------
numbers = st.one_of(st.integers(-10, 10 ** 4), st.floats(allow_nan=True, allow_infinity=True), st.none(),
                    st.text(max_size=4), st.booleans())
task = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["upserter", "backfiller", "other"]),
    "every": st.one_of(st.sampled_from(["60s", "5m", "continuous", "0 0 30 2 *", "*/10 * * * *", "x"]), numbers),
    "batch_size": numbers, "cost_per_item": numbers, "page_cost": numbers, "threshold": numbers,
    "priority": numbers, "weight": numbers, "max_wait": numbers})
configs = st.fixed_dictionaries({"refill_per_minute": numbers}, optional={
    "start_tokens": numbers, "capacity": numbers, "starvation_bound": numbers,
    "policy": st.sampled_from(["priority", "threshold", "fair", "greedy", "nope"]),
    "refill": st.sampled_from(["continuous", "stepped", "sometimes"]),
    "tasks": st.dictionaries(st.sampled_from(["up", "bf", "x"]), task, max_size=3),
    "workload": st.fixed_dictionaries({}, optional={"pending_new_deals": numbers, "new_deals_per_hour": numbers,
                                                   "backlog": numbers, "offers_per_product": numbers})})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_every_config_is_refused_naming_a_field_or_simulates_an_hour(raw):
    try:
        cfg = parse_config(raw)
    except ConfigError as e:
        assert e.field and str(e).startswith(e.field), str(e)
        return
    r = simulate(cfg, 1.0)
    assert r.summary()["tasks"].keys() == cfg.tasks.keys()


def test_a_grid_where_no_point_is_valid_says_so_with_the_first_error(tmp_path):
    (tmp_path / "g.yaml").write_text("tasks.update_recent_deals.batch_size: [0, -1]\n")
    p = cli("sweep", "--config", DATA / "seed_incident.yaml", "--grid", "g.yaml", "--hours", "1", "--quiet",
            cwd=tmp_path)
    assert_one_line(p, "no point of the grid is valid", "batch_size=0", "must be >= 1")


def test_a_misspelled_task_in_a_grid_is_refused_before_sweeping(tmp_path):
    (tmp_path / "g.yaml").write_text("tasks.update_recnt_deals.batch_size: [1, 2]\n")
    p = cli("sweep", "--config", DATA / "seed_incident.yaml", "--grid", "g.yaml", "--hours", "1", "--quiet",
            cwd=tmp_path)
    assert_one_line(p, "update_recnt_deals", "update_recent_deals")


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_sigterm_ends_a_sweep_and_its_workers(tmp_path):
    import signal
    import time
    (tmp_path / "g.yaml").write_text("tasks.update_recent_deals.batch_size: [1, 2, 3, 4, 5, 6, 7, 8]\n"
                                     "tasks.backfill_deals.batch_size: [1, 2, 3, 4, 5, 6, 7, 8]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "keepa_ops.cli", "sweep", "--config", str(DATA / "seed_incident.yaml"),
                          "--grid", "g.yaml", "--hours", "30000", "--workers", "2", "--quiet"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(_children(p.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = _children(p.pid)
    assert len(workers) >= 2, "the sweep never started its workers"
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=20)
    assert p.returncode != 0
    time.sleep(0.5)
    alive = [w for w in workers if os.path.exists(f"/proc/{w}") and
             open(f"/proc/{w}/stat").read().split()[2] != "Z"]
    assert alive == [], f"workers left running: {alive}"


def test_a_key_echoed_back_by_a_server_is_redacted_in_every_encoding(tmp_path):
    """A proxy that echoes the request in its error body: the key must not reach stderr or the events,
    raw or percent- or form-encoded."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import quote, quote_plus

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"tokensLeft": 100, "refillIn": 1000, "refillRate": 5, "tokensConsumed": 0,
                               "timestamp": 1, "error": {"type": "gateway", "message": f"bad upstream {self.path}"}
                               }).encode()
            self.send_response(502)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = "kx+9/Zq= &secret%41"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**seed(), "keepa": {"timeout": 2, "retries": 1, "backoff": 0}}))
    env = dict(os.environ, PYTHONPATH=str(ROOT), KEEPA_API_KEY=key)
    try:
        p = subprocess.run([sys.executable, "-m", "keepa_ops.cli", "run", "--config", str(cfg), "--db", "d.sqlite",
                            "--keepa-url", f"http://127.0.0.1:{server.server_port}", "--duration", "1m"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "502" in p.stderr and "key=***" in p.stderr  # the echo did come back, redacted
    seen = p.stdout + p.stderr + "".join(f.read_text(errors="replace") for f in tmp_path.glob("*.jsonl"))
    for spelling in {key, quote(key, safe=""), quote_plus(key), quote(key, safe="").lower(), "secret"}:
        assert spelling not in seen, spelling
