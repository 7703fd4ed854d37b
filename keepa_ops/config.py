"""YAML configs for the simulator, the live runner and sweeps.

Invariant: a ``Config`` that exists is valid. Every problem raises ``ConfigError``
naming the dotted field and the fix, before anything runs; that includes a task
whose target (one batch's cost plus its threshold) is above the bucket's capacity.
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .errors import ConfigError
from .core.policies import POLICIES as POLICY_CLASSES
from .core.policies import admission_target
from .core.schedule import Continuous, Cron, Every, parse_duration

POLICIES = tuple(POLICY_CLASSES)
ROLES = ("upserter", "backfiller")

_TOP = {"refill_per_minute", "start_tokens", "capacity", "refill", "policy", "starvation_bound",
        "start", "tasks", "workload", "keepa"}
_TASK = {"role", "every", "batch_size", "cost_per_item", "page_cost", "threshold", "priority",
         "weight", "max_wait", "product_params"}
_WORKLOAD = {"pending_new_deals", "new_deals_per_hour", "arrivals", "backlog", "offers_per_product"}
_KEEPA = {"url", "key_file", "domain", "price_type", "product_params", "timeout", "retries", "backoff"}


def _check_keys(d, allowed, where):
    if not isinstance(d, dict):
        raise ConfigError(where or "config", f"expected a mapping, got {type(d).__name__}.")
    for k in d:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            fix = f"did you mean '{near[0]}'?" if near else f"use one of: {', '.join(sorted(allowed))}."
            raise ConfigError(f"{where}.{k}" if where else str(k), "unknown key.", fix)


def _number(d, key, where, default=None, *, minimum=None, strict=False, integer=False, required=False,
            maximum=None):
    name = f"{where}.{key}" if where else key
    if key not in d or d[key] is None:
        if required:
            raise ConfigError(name, "is required.", f"add `{key}: <number>`.")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(name, f"expected a number, got {v!r}.")
    if not math.isfinite(v):
        raise ConfigError(name, f"expected a finite number, got {v!r}.", f"give {key} a finite value.")
    if integer and int(v) != v:
        raise ConfigError(name, f"expected a whole number, got {v!r}.")
    if minimum is not None and (v < minimum or (strict and v == minimum)):
        rel = ">" if strict else ">="
        raise ConfigError(name, f"must be {rel} {minimum:g}, got {v!r}.", f"set {key} {rel} {minimum:g}.")
    if maximum is not None and v > maximum:
        raise ConfigError(name, f"must be <= {maximum:g}, got {v!r}.", f"set {key} <= {maximum:g}.")
    return int(v) if integer else float(v)


def _duration(d, key, where, default, *, positive=True):
    """A duration field in seconds: finite, and > 0 (``positive``) or >= 0; absent or null: ``default``."""
    name = f"{where}.{key}" if where else key
    v = d.get(key)
    if v is None:   # `key:` with no value means the default, as for a number
        v = default
    if v is None:
        return None
    s = parse_duration(v, name)
    if s < 0 or (positive and s == 0):
        rel = ">" if positive else ">="
        raise ConfigError(name, f"must be {rel} 0, got {v!r}.", f"set {key} {rel} 0, e.g. 10s.")
    return s


# Upper bounds on sizes, so that a typo cannot ask for gigabytes: Keepa's /product takes at most 100
# ASINs, and a simulated deal stream holds its live deals in memory.
MAX_BATCH = 100
MAX_PENDING = 1_000_000
MAX_PER_HOUR = 100_000
MAX_BACKLOG = 100_000_000


@dataclass(frozen=True)
class TaskSpec:
    name: str
    role: str
    schedule: object
    batch_size: int
    cost_per_item: float
    page_cost: float
    threshold: float
    priority: int
    weight: float
    max_wait: float | None
    product_params: dict | None = None  # this task's /product parameters (default: keepa.product_params)

    @property
    def batch_cost(self) -> float:
        return self.batch_size * self.cost_per_item

    def target(self, policy: str) -> float:
        """Balance at which ``policy`` admits one full batch."""
        return admission_target(policy, self.batch_cost, self.threshold)


@dataclass(frozen=True)
class Workload:
    pending_new_deals: int = 0
    new_deals_per_hour: float = 0.0
    arrivals: tuple[float, ...] | None = None
    backlog: int = 0
    offers_per_product: int | None = None  # None: each product has 5-35 offers (a hash of its ASIN)


@dataclass(frozen=True)
class KeepaSettings:
    """Live-only settings. The key itself never lives in a config: KEEPA_API_KEY or key_file."""

    url: str | None = None
    key_file: str | None = None
    domain: int = 1
    price_type: int = 0
    product_params: dict = field(default_factory=dict)
    timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.5


@dataclass(frozen=True)
class Config:
    refill_per_minute: float
    start_tokens: float
    capacity: float
    stepped: bool
    policy: str
    starvation_bound: float
    start: datetime
    tasks: dict[str, TaskSpec]
    workload: Workload
    keepa: KeepaSettings
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    def task(self, role: str) -> TaskSpec | None:
        return next((t for t in self.tasks.values() if t.role == role), None)

    def to_dict(self) -> dict:
        return copy.deepcopy(self.raw)

    def only_tasks(self, names) -> "Config":
        """The same config running only the tasks ``names`` (the bucket, the policy and the other tasks'
        specs are unchanged: a shared gate still knows them)."""
        unknown = [n for n in names if n not in self.tasks]
        if unknown:
            raise ConfigError("--task", f"{', '.join(map(repr, unknown))} is not a task of this config.",
                              f"use one of {', '.join(self.tasks)}")
        return replace(self, tasks={n: t for n, t in self.tasks.items() if n in names})

    def with_overrides(self, overrides: dict) -> "Config":
        """A new validated Config with dotted keys replaced, e.g. ``tasks.x.batch_size``."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            node = raw
            parts = dotted.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    node[p] = {}
                node = node[p]
            node[parts[-1]] = value
        return parse_config(raw)

    def dump(self, path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.raw, sort_keys=False))
        return path


def _schedule(task: dict, name: str, role: str, start: datetime):
    where = f"tasks.{name}.every"
    every = task.get("every", "60s" if role == "upserter" else "continuous")
    if every == "continuous":
        return Continuous()
    if isinstance(every, str) and len(every.split()) == 5:
        try:
            cron = Cron(every, start)
        except ValueError:
            raise ConfigError(where, f"{every!r} is not a valid cron expression.",
                              "use five fields, e.g. '*/10 * * * *'.") from None
        _fires(cron, where, every)
        return cron
    period = parse_duration(every, where)
    if period <= 0:
        raise ConfigError(where, f"must be > 0, got {every!r}.", "use e.g. 60s, or 'continuous'.")
    return Every(period)


def _fires(schedule, where: str, every) -> None:
    """A cron schedule must fire again after its first run (``0 0 30 2 *`` never does)."""
    try:
        nxt = schedule.first_at_or_after(1.0)
    except Exception:  # croniter gives up on a date that never comes
        nxt = math.inf
    if not nxt < 5 * 366 * 86400:
        raise ConfigError(where, f"{every!r} never fires (no match in five years).",
                          "check the day-of-month and month fields, e.g. '0 0 28 2 *'.")


def _product_params(params, where: str) -> dict | None:
    if params is None:
        return None
    if not isinstance(params, dict):
        raise ConfigError(where, "expected a mapping of /product parameters.", "e.g. {offers: 20, buybox: 1}.")
    if "key" in params:
        raise ConfigError(f"{where}.key", "the API key must not be in a config.",
                          "set KEEPA_API_KEY or keepa.key_file instead.")
    return dict(params)


def _task(d, name, capacity, policy, start, strict=True) -> TaskSpec:
    where = f"tasks.{name}"
    _check_keys(d, _TASK, where)
    role = d.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {role!r}.")
    spec = TaskSpec(
        name=name,
        role=role,
        schedule=_schedule(d, name, role, start),
        batch_size=_number(d, "batch_size", where, 10, minimum=1, integer=True, maximum=MAX_BATCH),
        cost_per_item=_number(d, "cost_per_item", where, 1.0, minimum=0, strict=True),
        page_cost=_number(d, "page_cost", where, 5.0, minimum=0),
        threshold=_number(d, "threshold", where, 0.0, minimum=0),
        priority=_number(d, "priority", where, 1 if role == "upserter" else 2, minimum=1, integer=True),
        weight=_number(d, "weight", where, 1.0, minimum=0, strict=True),
        max_wait=_duration(d, "max_wait", where, None),
        product_params=_product_params(d.get("product_params"), f"{where}.product_params"),
    )
    if policy != "greedy" and strict:
        reserve = admission_target(policy, 0, spec.threshold) if policy == "threshold" else 0.0
        for what, cost in (("batch_size", spec.batch_cost), ("page_cost", spec.page_cost)):
            target = admission_target(policy, cost, spec.threshold)
            if target > capacity + 1e-9:
                if what == "batch_size":
                    parts = f"batch_size {spec.batch_size} x cost_per_item {spec.cost_per_item:g}"
                    if reserve:
                        parts += f" + threshold {spec.threshold:g}"
                    fits = math.floor((capacity - reserve) / spec.cost_per_item)
                    fixes = []
                    if fits >= 1:
                        fixes.append(f"lower {where}.batch_size to at most {fits}")
                    if reserve and capacity - spec.batch_cost >= 0:
                        fixes.append(f"lower {where}.threshold to at most {capacity - spec.batch_cost:g}")
                else:
                    parts = f"page_cost {spec.page_cost:g}" + (f" + threshold {spec.threshold:g}" if reserve else "")
                    fixes = [f"lower {where}.threshold to at most {max(0, capacity - spec.page_cost):g}"] if reserve else []
                fixes.append("or raise the refill rate")
                raise ConfigError(
                    where,
                    f"target {target:g} ({parts}) is above the bucket capacity {capacity:g} "
                    f"(60 x refill_per_minute), so {name} would wait forever under policy {policy}.",
                    ", ".join(fixes) + ".",
                )
    return spec


def parse_config(raw: dict, strict: bool = True) -> Config:
    """Validate a config mapping (as loaded from YAML) into a ``Config``.

    ``strict=False`` admits unreachable targets: only for re-enacting such an incident.
    """
    raw = copy.deepcopy(raw)
    _check_keys(raw, _TOP, "")
    rate = _number(raw, "refill_per_minute", "", minimum=0, strict=True, required=True)
    capacity = _number(raw, "capacity", "", 60.0 * rate, minimum=0, strict=True)
    start_tokens = _number(raw, "start_tokens", "", capacity)
    if start_tokens > capacity:
        raise ConfigError("start_tokens", f"{start_tokens:g} is above the capacity {capacity:g}.",
                          f"set start_tokens <= {capacity:g}.")
    refill = raw.get("refill", "continuous")
    if refill not in ("continuous", "stepped"):
        raise ConfigError("refill", f"must be 'continuous' or 'stepped', got {refill!r}.")
    policy = raw.get("policy", "priority")
    if policy not in POLICIES:
        near = difflib.get_close_matches(str(policy), POLICIES, n=1)
        raise ConfigError("policy", f"unknown policy {policy!r}.",
                          f"did you mean '{near[0]}'?" if near else f"use one of {', '.join(POLICIES)}.")
    bound = _duration(raw, "starvation_bound", "", "1h")
    start = raw.get("start", "2026-02-04T00:00:00Z")
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError("start", f"{start!r} is not an ISO date-time.", "use e.g. 2026-02-04T00:00:00Z.") from None
    if not isinstance(start, datetime):
        raise ConfigError("start", f"expected an ISO date-time, got {start!r}.")
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)

    tasks_raw = raw.get("tasks")
    if not tasks_raw or not isinstance(tasks_raw, dict):
        raise ConfigError("tasks", "at least one task is required.",
                          "add e.g. `tasks: {update_recent_deals: {role: upserter}}`.")
    tasks = {}
    for name, d in tasks_raw.items():
        tasks[str(name)] = _task(d if d is not None else {}, str(name), capacity, policy, start, strict)
    for role in ROLES:
        same = [t.name for t in tasks.values() if t.role == role]
        if len(same) > 1:
            raise ConfigError("tasks", f"more than one {role}: {', '.join(same)}.",
                              f"keep one {role}; they would share one deal stream.")

    w = raw.get("workload") or {}
    _check_keys(w, _WORKLOAD, "workload")
    arrivals = w.get("arrivals")
    if arrivals is not None:
        if not isinstance(arrivals, list):
            raise ConfigError("workload.arrivals", "expected a list of times since the start.", "e.g. [0, 90s, 1h].")
        arrivals = tuple(sorted(parse_duration(a, "workload.arrivals") for a in arrivals))
    workload = Workload(
        pending_new_deals=_number(w, "pending_new_deals", "workload", 0, minimum=0, integer=True,
                                  maximum=MAX_PENDING),
        new_deals_per_hour=_number(w, "new_deals_per_hour", "workload", 0.0, minimum=0, maximum=MAX_PER_HOUR),
        arrivals=arrivals,
        backlog=_number(w, "backlog", "workload", 0, minimum=0, integer=True, maximum=MAX_BACKLOG),
        offers_per_product=_number(w, "offers_per_product", "workload", None, minimum=0, integer=True),
    )
    k = raw.get("keepa") or {}
    _check_keys(k, _KEEPA, "keepa")
    params = _product_params(k.get("product_params") or {}, "keepa.product_params")
    for key in ("url", "key_file"):
        if k.get(key) is not None and not isinstance(k[key], str):
            raise ConfigError(f"keepa.{key}", f"expected text, got {k[key]!r}.",
                              "e.g. url: https://api.keepa.com" if key == "url" else "e.g. key_file: ~/.keepa_key")
    if k.get("url") is not None and not k["url"].startswith(("http://", "https://")):
        raise ConfigError("keepa.url", f"{k['url']!r} is not an http(s) URL.", "e.g. url: https://api.keepa.com")
    keepa = KeepaSettings(url=k.get("url"), key_file=k.get("key_file"),
                          domain=_number(k, "domain", "keepa", 1, minimum=1, integer=True),
                          price_type=_number(k, "price_type", "keepa", 0, minimum=0, integer=True),
                          product_params=dict(params),
                          timeout=_duration(k, "timeout", "keepa", 10),
                          retries=_number(k, "retries", "keepa", 3, minimum=0, integer=True),
                          backoff=_duration(k, "backoff", "keepa", 0.5, positive=False))
    return Config(rate, start_tokens, capacity, refill == "stepped", policy, bound, start, tasks,
                  workload, keepa, raw)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice in one mapping is an error, not the last one silently."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"config line {key_node.start_mark.line + 1}", f"key {key!r} is given twice in one "
                              f"mapping (first on line {seen[key]}).", "keep one; YAML would keep only the last.")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_yaml(text: str, what: str = "config"):
    """YAML text -> Python objects, refusing duplicate keys; errors are one ``ConfigError`` line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(what, "is not valid YAML: " + " ".join(str(e).split())) from None


def read_text_file(path, what: str = "config") -> str:
    """A UTF-8 text file's contents, or one ``ConfigError`` line saying why it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(what, f"file {p} does not exist.", "pass the path of a YAML file.")
    if p.is_dir():
        raise ConfigError(what, f"{p} is a directory.", "pass the path of a YAML file in it.")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(what, f"{p} is not UTF-8 text.", "save it as UTF-8 YAML.") from None
    except OSError as e:
        raise ConfigError(what, f"{p} cannot be read ({e.strerror}).", "check its permissions.") from None


def read_yaml(source, what: str = "config"):
    """A YAML file path, or YAML text (a line with ``key: value`` that is not a path) -> its objects."""
    s = str(source)
    text_given = isinstance(source, str) and ("\n" in s or (": " in s and not s.endswith((".yaml", ".yml"))))
    return load_yaml(s if text_given and not Path(s).exists() else read_text_file(source, what), what)


def load_config(source) -> Config:
    """Load a config from a YAML file path, a YAML string, or a mapping."""
    if isinstance(source, Config):
        return source
    if isinstance(source, dict):
        return parse_config(source)
    return parse_config(read_yaml(source))
