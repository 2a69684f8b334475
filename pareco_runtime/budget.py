"""Budgets: what a deployment may spend, parsed from text or built in code, and the choice under them.

Grammar
-------
A budget string is one or more budgets joined by ``,``, ``&`` or `` and `` (all must hold: AND).
Case does not matter and spaces may stand anywhere between the number and its unit. A number is a
non-negative decimal such as ``5``, ``0.25``, ``.5`` or ``2e3``.

========================  ==========================================================================
form                      meaning
========================  ==========================================================================
``100MFLOPs``             at most 100 million multiply-accumulates per image (FLOPs in this project
                          are MACs, the field's convention: MobileNetV2 = 300 MFLOPs). Prefixes
                          ``k``, ``M``, ``G`` or none: ``300kFLOPs`` = 0.3, ``1.2GFLOPs`` = 1200
                          MFLOPs. ``MACs`` is a synonym: ``50MMACs``, ``1GMACs``.
``2.5Mparams``            at most 2.5 million parameters; ``800Kparams``, ``1200params``.
``5ms`` / ``5ms@PROFILE`` latency cap of the device profile ``PROFILE`` (measured by ``pareco bench``);
                          units ``s``, ``ms``, ``us`` (or ``µs``): ``250us`` = 0.25 ms. Without
                          ``@PROFILE`` the front must hold latencies of exactly one profile.
``2mJ`` / ``2mJ@PROFILE`` energy cap per inference; units ``J``, ``mJ``, ``uJ``: ``0.5J`` = 500 mJ.
``battery=30%``           battery level (``battery=0.3`` alike), turned into a cap by a
                          :class:`BatteryPolicy`.
========================  ==========================================================================

A profile name is ``[A-Za-z0-9_.-]+``. Examples: ``" 100 mflops "``, ``"5ms@pixel7 & 2.5Mparams"``,
``"battery=20%, 8ms"``. Anything else raises :class:`BudgetError` quoting the text.

Battery policy
--------------
A battery level ``b`` (0 = empty, 1 = full) caps one resource, the *energy per inference* of a device
profile or the *MFLOPs*, between the front's cheapest cost ``min`` and its most expensive ``max``:

* ``b >= full_at`` (default 0.8): cap = ``max``, i.e. no cap: the most accurate point;
* ``b <= floor`` (default 0.1): cap = ``min``: the cheapest point;
* in between, linearly: ``cap = min + (b - floor) / (full_at - floor) * (max - min)``.

``resource="auto"`` (default) caps energy when every point has an energy for the profile in use
and MFLOPs otherwise; ``"energy"`` or ``"mflops"`` force one. The profile in use is the first one a
latency or energy budget of the same request names, else the only profile with an energy for every
point, else none. A lower level never selects a costlier point.

Selection
---------
:func:`select` keeps the points that satisfy every budget and returns the best by the front's metric
(:class:`~pareco_runtime.manifest.Metric`; top-1 where the manifest declares none) in its direction:
the figure it was chosen on (``selection_top1``, held out of training), else the reported one; for
top-1 where no point of the front has one, the lowest loss; where neither, the most MFLOPs.
Ties go to fewer MFLOPs, then to the smaller id. When no point satisfies, :class:`BudgetUnmetError`
names the cheapest point, unless ``fallback="cheapest"``.

Precisions
----------
:func:`choose` selects among a front's deployable programs: each point in fp32 and its quantized
variants (``pareco export --int8``). A variant has the point's MACs and parameters and its own
measured latencies; it ranks as its point less the top-1 drop measured between the two programs on
the same images (so fp32 and int8 are compared on one split, the one the point's figure is from); on a
front ranked by its own metric, as its point with each figure moved by the change measured alike.
``precision="fp32"`` or ``"int8"`` restricts the choice; ties go to the fp32 point.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .manifest import PRECISIONS, FrontPoint, Metric, Variant

__all__ = [
    "AllOf",
    "BatteryBudget",
    "BatteryPolicy",
    "Budget",
    "BudgetError",
    "BudgetUnmetError",
    "Choice",
    "EnergyBudget",
    "LatencyBudget",
    "MacsBudget",
    "ParamsBudget",
    "ProfileError",
    "as_budget",
    "choose",
    "parse_budget",
    "read_host_battery",
    "select",
]

ACCEPTED_FORMS = (
    "100MFLOPs, 1.2GFLOPs, 300kFLOPs, 50MMACs, 2.5Mparams, 800Kparams, 1200params, 5ms, 5ms@PROFILE, "
    "250us, 2mJ, 2mJ@PROFILE, 0.5J, battery=30%, battery=0.3; join several with ',', '&' or ' and '"
)
BENCH_HINT = "run `pareco bench MANIFEST --backend ... --update` to measure it"


class BudgetError(ValueError):
    """A budget that cannot be read (or built): the message names the bad text and the accepted forms."""


class BudgetUnmetError(ValueError):
    """No front point satisfies the budget; the message names the cheapest point and its cost.

    ``reason`` is the message without its remedy, for callers that name the fallback their own way
    (the CLI's ``--fallback cheapest``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f'{reason}; loosen the budget or pass fallback="cheapest"')
        self.reason = reason


class ProfileError(ValueError):
    """A latency or energy budget refers to a device profile that is unknown or has no measurement."""


def _fmt(x: float) -> str:
    """A number for messages: up to 6 significant digits, no trailing zeros."""
    return f"{x:.6g}"


def _check_amount(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BudgetError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise BudgetError(f"{name} must be finite and non-negative, got {value!r}")


def _check_profile(profile: str | None) -> None:
    if profile is not None and (not isinstance(profile, str) or not _PROFILE.fullmatch(profile)):
        raise BudgetError(f"profile name must match [A-Za-z0-9_.-]+, got {profile!r}")


def _params_text(n: float) -> str:
    if n >= 1e6:
        return f"{_fmt(n / 1e6)}M params"
    if n >= 1e3:
        return f"{_fmt(n / 1e3)}K params"
    return f"{_fmt(n)} params"


def _at(profile: str | None) -> str:
    return f" @ {profile}" if profile else ""


@dataclass(frozen=True)
class MacsBudget:
    """At most ``max_mflops`` million multiply-accumulates (the manifest's ``mflops``)."""

    max_mflops: float

    def __post_init__(self) -> None:
        _check_amount("max_mflops", self.max_mflops)

    def describe(self) -> str:
        """Human-readable form, e.g. ``"≤ 100 MFLOPs"``."""
        return f"≤ {_fmt(self.max_mflops)} MFLOPs"


@dataclass(frozen=True)
class ParamsBudget:
    """At most ``max_params`` parameters (a plain count, not millions)."""

    max_params: float

    def __post_init__(self) -> None:
        _check_amount("max_params", self.max_params)

    def describe(self) -> str:
        """Human-readable form, e.g. ``"≤ 2.5M params"``."""
        return f"≤ {_params_text(self.max_params)}"


@dataclass(frozen=True)
class LatencyBudget:
    """At most ``max_ms`` milliseconds per inference on device profile ``profile`` (None: the only one)."""

    max_ms: float
    profile: str | None = None

    def __post_init__(self) -> None:
        _check_amount("max_ms", self.max_ms)
        _check_profile(self.profile)

    def describe(self) -> str:
        """Human-readable form, e.g. ``"≤ 5 ms @ pixel7"``."""
        return f"≤ {_fmt(self.max_ms)} ms{_at(self.profile)}"


@dataclass(frozen=True)
class EnergyBudget:
    """At most ``max_mj`` millijoules per inference on device profile ``profile`` (None: the only one)."""

    max_mj: float
    profile: str | None = None

    def __post_init__(self) -> None:
        _check_amount("max_mj", self.max_mj)
        _check_profile(self.profile)

    def describe(self) -> str:
        """Human-readable form, e.g. ``"≤ 2 mJ @ pixel7"``."""
        return f"≤ {_fmt(self.max_mj)} mJ{_at(self.profile)}"


@dataclass(frozen=True)
class BatteryBudget:
    """Battery level in [0, 1]; :class:`BatteryPolicy` turns it into an energy or MFLOPs cap."""

    level: float

    def __post_init__(self) -> None:
        _check_amount("level", self.level)
        if self.level > 1:
            raise BudgetError(f"battery level must be within 0..1, got {self.level!r}")

    def describe(self) -> str:
        """Human-readable form, e.g. ``"battery 30%"``."""
        return f"battery {_fmt(self.level * 100)}%"


@dataclass(frozen=True)
class AllOf:
    """Several budgets that must all hold (AND)."""

    budgets: tuple[Budget, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "budgets", tuple(self.budgets))
        if not self.budgets:
            raise BudgetError("AllOf needs at least one budget")
        for b in self.budgets:
            if not isinstance(b, _BUDGET_TYPES):
                raise BudgetError(f"AllOf takes budgets, got {b!r}")

    def describe(self) -> str:
        """The parts' descriptions joined by ``and``."""
        return " and ".join(b.describe() for b in self.budgets)


Budget = MacsBudget | ParamsBudget | LatencyBudget | EnergyBudget | BatteryBudget | AllOf
_BUDGET_TYPES = (MacsBudget, ParamsBudget, LatencyBudget, EnergyBudget, BatteryBudget, AllOf)

# ---------------------------------------------------------------------------------------------- parsing

# The patterns below are linear in the input (no nested or adjacent ambiguous repeats): budget strings
# may come from users, and a crafted one must not make the parser backtrack for minutes.
_WHITESPACE = " \t\n\r\f\v"  # what ``\s`` matches under re.ASCII
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?", re.IGNORECASE | re.ASCII)
_SEPARATOR = re.compile(r"[,&]|(?<!\s)\s+and\s+", re.IGNORECASE | re.ASCII)
_SPACE = re.compile(r"\s+", re.ASCII)
_BATTERY = re.compile(r"battery", re.IGNORECASE | re.ASCII)
_PROFILE = re.compile(r"[A-Za-z0-9_.\-]+", re.ASCII)

# unit (lower case, no spaces) -> (budget class, power of ten that converts to the class's unit)
_UNITS: dict[str, tuple[type, int]] = {}
for _base in ("flop", "flops", "mac", "macs"):
    _UNITS.update(
        {
            _base: (MacsBudget, -6),
            "k" + _base: (MacsBudget, -3),
            "m" + _base: (MacsBudget, 0),
            "g" + _base: (MacsBudget, 3),
        }
    )
for _base in ("param", "params"):
    _UNITS.update(
        {
            _base: (ParamsBudget, 0),
            "k" + _base: (ParamsBudget, 3),
            "m" + _base: (ParamsBudget, 6),
            "g" + _base: (ParamsBudget, 9),
        }
    )
for _micro in ("u", "µ", "μ"):
    _UNITS.update({_micro + "s": (LatencyBudget, -3), _micro + "j": (EnergyBudget, -3)})
_UNITS.update(
    {"s": (LatencyBudget, 3), "ms": (LatencyBudget, 0), "j": (EnergyBudget, 3), "mj": (EnergyBudget, 0)}
)
del _base, _micro


def _quote(text: str, limit: int = 120) -> str:
    """``repr`` of the text (so the message stays on one line), shortened past ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def _scaled(num: str, power: int) -> float:
    value = float(num)
    return value * 10**power if power >= 0 else value / 10**-power


def _parse_battery(rest: str) -> BatteryBudget:
    """The part of ``battery=30%`` after the word ``battery``."""
    rest = rest.strip(_WHITESPACE)
    if not rest.startswith("="):
        raise BudgetError("a battery level reads battery=30% or battery=0.3")
    rest = rest[1:].lstrip(_WHITESPACE)
    percent = rest.endswith("%")
    number = rest[:-1].rstrip(_WHITESPACE) if percent else rest
    if not _NUMBER.fullmatch(number):
        raise BudgetError("a battery level reads battery=30% or battery=0.3")
    level = float(number) / (100 if percent else 1)
    if not 0 <= level <= 1:
        raise BudgetError("battery level must be within 0-100% (or 0-1)")
    return BatteryBudget(level)


def _parse_one(part: str) -> Budget:
    """One budget, stripped, without separators; raises BudgetError with the reason only (the caller adds
    context)."""
    battery = _BATTERY.match(part)
    if battery:
        return _parse_battery(part[battery.end() :])
    number = _NUMBER.match(part)
    if not number:
        raise BudgetError("expected a number followed by a unit")
    unit_text, at, profile = part[number.end() :].partition("@")
    unit = _SPACE.sub("", unit_text).lower()
    if not unit:
        raise BudgetError("the number has no unit")
    if unit not in _UNITS:
        raise BudgetError(f"unknown unit {_quote(unit)}")
    cls, power = _UNITS[unit]
    if number[0].startswith("-"):
        raise BudgetError("a budget cannot be negative")
    value = _scaled(number[0], power)
    if not math.isfinite(value):
        raise BudgetError("the number is too large")
    if not at:
        return cls(value)
    if cls not in (LatencyBudget, EnergyBudget):
        raise BudgetError("'@PROFILE' applies to latency and energy budgets only")
    profile = profile.strip(_WHITESPACE)
    if not _PROFILE.fullmatch(profile):
        raise BudgetError(f"profile name {_quote(profile)} is not of the form [A-Za-z0-9_.-]+")
    return cls(value, profile)


def parse_budget(text: str) -> Budget:
    """Read a budget string (grammar in the module docstring): one budget object, or :class:`AllOf`.

    Raises :class:`BudgetError` (a ``ValueError``), and nothing else, for any string that is not a
    budget; its one-line message quotes the text and lists the accepted forms. A non-string raises
    ``TypeError``.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_budget takes a string, got {type(text).__name__}")
    parts = [part.strip(_WHITESPACE) for part in _SEPARATOR.split(text)]
    budgets = []
    for part in parts:
        where = _quote(text) if len(parts) == 1 else f"{_quote(part)} in {_quote(text)}"
        if not part:
            reason = "empty budget" if len(parts) == 1 else "empty part"
            raise BudgetError(f"cannot read budget {where}: {reason}; accepted forms: {ACCEPTED_FORMS}")
        try:
            budgets.append(_parse_one(part))
        except BudgetError as e:
            raise BudgetError(f"cannot read budget {where}: {e}; accepted forms: {ACCEPTED_FORMS}") from None
    return budgets[0] if len(budgets) == 1 else AllOf(tuple(budgets))


def as_budget(b: str | Budget | Sequence[str | Budget]) -> Budget:
    """Normalise user input: a string is parsed, a budget kept, a list or tuple means AND of its items.

    Nested :class:`AllOf` are flattened; a single budget comes back as itself. An empty list raises
    :class:`BudgetError`, any other type ``TypeError``.
    """
    if isinstance(b, str):
        return parse_budget(b)
    if isinstance(b, _BUDGET_TYPES):
        return b
    if isinstance(b, (list, tuple)):
        atoms = [a for item in b for a in _atoms(as_budget(item))]
        if not atoms:
            raise BudgetError(f"an empty list is no budget; accepted forms: {ACCEPTED_FORMS}")
        return atoms[0] if len(atoms) == 1 else AllOf(tuple(atoms))
    raise TypeError(f"a budget is a string, a budget object or a list of them, got {type(b).__name__}")


def _atoms(b: Budget) -> list[Budget]:
    """The non-AllOf budgets of ``b``, in order."""
    return [a for sub in b.budgets for a in _atoms(sub)] if isinstance(b, AllOf) else [b]


_KINDS: dict[type, str] = {
    MacsBudget: "flops",
    ParamsBudget: "params",
    LatencyBudget: "latency",
    EnergyBudget: "energy",
    BatteryBudget: "battery",
}


def budget_parts(b: Budget) -> list[dict[str, float | str | None]]:
    """The budgets ``b`` ANDs as plain dicts, in order: ``kind`` (flops, params, latency, energy,
    battery) and the budget's fields, units in their names (``max_mflops``, ``max_params`` as a count,
    ``max_ms``, ``max_mj``, ``profile``; ``level`` in 0..1)."""
    return [{"kind": _KINDS[type(a)], **dataclasses.asdict(a)} for a in _atoms(b)]


# ---------------------------------------------------------------------------------------------- battery


@dataclass
class BatteryPolicy:
    """How a battery level becomes a cap (see "Battery policy" in the module docstring).

    ``full_at``: at or above this level, no cap (the most accurate point). ``floor``: at or below,
    the cheapest point. ``resource``: ``"energy"`` (energy per inference of the profile in use),
    ``"mflops"``, or ``"auto"`` (energy if every point has one for the profile, else MFLOPs).
    Between ``floor`` and ``full_at`` the cap interpolates linearly from the cheapest point's cost
    to the most expensive point's.
    """

    full_at: float = 0.8
    floor: float = 0.1
    resource: str = "auto"

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        if not 0 <= self.floor < self.full_at <= 1:
            raise ValueError(
                f"BatteryPolicy needs 0 <= floor < full_at <= 1, got floor={self.floor!r}, "
                f"full_at={self.full_at!r}"
            )
        if self.resource not in ("auto", "energy", "mflops"):
            raise ValueError(f"BatteryPolicy.resource is 'auto', 'energy' or 'mflops', got {self.resource!r}")

    def cap(
        self, level: float, points: Sequence[FrontPoint], profile: str | None
    ) -> MacsBudget | EnergyBudget:
        """The cap for battery ``level`` (0..1) over ``points``, in energy of ``profile`` or in MFLOPs.

        Raises ``ValueError`` for a level outside [0, 1] or no points, :class:`ProfileError` when
        ``resource="energy"`` and a point has no energy for ``profile``.
        """
        self._validate()
        if not 0 <= level <= 1:
            raise ValueError(f"battery level must be within 0..1, got {level!r}")
        if not points:
            raise ValueError("no front points to cap")
        has_energy = profile is not None and all(profile in p.energy_mj for p in points)
        if self.resource == "energy" and not has_energy:
            where = f"profile {profile!r} has" if profile else "no device profile has"
            raise ProfileError(
                f"the battery policy caps energy, but {where} an energy for every point; "
                f"{BENCH_HINT}, or use BatteryPolicy(resource='auto')"
            )
        energy_profile = profile if has_energy and self.resource != "mflops" else None
        costs = [p.energy_mj[energy_profile] if energy_profile is not None else p.mflops for p in points]
        lo, hi = min(costs), max(costs)
        if level >= self.full_at:
            cap = hi
        elif level <= self.floor:
            cap = lo
        else:
            cap = min(hi, lo + (level - self.floor) / (self.full_at - self.floor) * (hi - lo))
        return EnergyBudget(cap, energy_profile) if energy_profile is not None else MacsBudget(cap)


def read_host_battery(root: str | Path = "/sys/class/power_supply") -> float | None:
    """The host's battery level in [0, 1], or None where the OS exposes no battery.

    Reads ``capacity`` (percent) of each ``root/*`` whose ``type`` is ``Battery`` (Linux sysfs) and
    averages them. Other systems, and hosts without a battery (servers, these CI machines): None.
    """
    levels = []
    try:
        supplies = sorted(Path(root).iterdir())
    except OSError:
        return None
    for supply in supplies:
        try:
            if (supply / "type").read_text().strip() != "Battery":
                continue
            levels.append(min(1.0, max(0.0, float((supply / "capacity").read_text().strip()) / 100)))
        except (OSError, ValueError):
            continue
    return sum(levels) / len(levels) if levels else None


# ---------------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class _Bound:
    """One resolved budget: a cost per point (None: unknown, so not eligible) and its cap."""

    label: str
    cost: Callable[[FrontPoint], float | None]
    cap: float
    unit: Callable[[float], str]

    def ok(self, p: FrontPoint) -> bool:
        c = self.cost(p)
        return c is not None and c <= self.cap


def _profiles_in(points: Sequence[FrontPoint]) -> set[str]:
    return {k for p in points for d in (p.latency_ms, p.energy_mj, p.latency_predicted_ms) for k in d}


def _resolve_profile(
    b: LatencyBudget | EnergyBudget,
    points: Sequence[FrontPoint],
    profiles: Sequence[str],
    allow_predicted: bool,
) -> str:
    """The profile a latency or energy budget applies to, checked to have measurements."""
    latency = isinstance(b, LatencyBudget)
    what = "latency" if latency else "energy"

    def tables(p: FrontPoint) -> list[dict[str, float]]:
        if not latency:
            return [p.energy_mj]
        return [p.latency_ms, p.latency_predicted_ms] if allow_predicted else [p.latency_ms]

    measured = sorted({k for p in points for t in tables(p) for k in t})
    example = f"{_fmt(b.max_ms)}ms" if isinstance(b, LatencyBudget) else f"{_fmt(b.max_mj)}mJ"
    if b.profile is None:
        if len(measured) == 1:
            return measured[0]
        if len(measured) > 1:
            raise ProfileError(
                f"budget {b.describe()!r} names no device profile and the front has {what} for "
                f"several: {', '.join(measured)}; name one, e.g. {example}@{measured[0]}"
            )
        profile = None
    else:
        known = sorted(set(profiles) | _profiles_in(points))
        if b.profile not in known:
            raise ProfileError(
                f"unknown device profile {b.profile!r} in budget {b.describe()!r}; known "
                f"profiles: {', '.join(known) if known else 'none, ' + BENCH_HINT}"
            )
        if b.profile in measured:
            return b.profile
        profile = b.profile
    where = f"profile {profile!r}" if profile else "any profile"
    predicted = {k for p in points for k in p.latency_predicted_ms}
    hint = ""
    if latency and not allow_predicted and (profile in predicted if profile else predicted):
        hint = " (predicted latencies exist: pass allow_predicted=True to use them)"
    raise ProfileError(f"no point has a {what} for {where} (budget {b.describe()!r}); {BENCH_HINT}{hint}")


def _bound(
    b: Budget,
    points: Sequence[FrontPoint],
    profiles: Sequence[str],
    policy: BatteryPolicy,
    allow_predicted: bool,
    battery_profile: str | None,
) -> _Bound:
    """Resolve one non-AllOf budget against the front."""

    def ms(v: float) -> str:
        return f"{_fmt(v)} ms"

    def mj(v: float) -> str:
        return f"{_fmt(v)} mJ"

    def mflops(v: float) -> str:
        return f"{_fmt(v)} MFLOPs"

    if isinstance(b, MacsBudget):
        return _Bound(b.describe(), lambda p: p.mflops, b.max_mflops, mflops)
    if isinstance(b, ParamsBudget):
        return _Bound(b.describe(), lambda p: float(p.params), b.max_params, _params_text)
    if isinstance(b, LatencyBudget):
        prof = _resolve_profile(b, points, profiles, allow_predicted)

        def latency(p: FrontPoint) -> float | None:
            if prof in p.latency_ms:
                return p.latency_ms[prof]
            return p.latency_predicted_ms.get(prof) if allow_predicted else None

        return _Bound(LatencyBudget(b.max_ms, prof).describe(), latency, b.max_ms, ms)
    if isinstance(b, EnergyBudget):
        prof = _resolve_profile(b, points, profiles, allow_predicted)
        return _Bound(EnergyBudget(b.max_mj, prof).describe(), lambda p: p.energy_mj.get(prof), b.max_mj, mj)
    if isinstance(b, AllOf):
        raise TypeError("_bound takes one budget; split an AllOf into its atoms first")
    cap = policy.cap(b.level, points, battery_profile)
    inner = _bound(cap, points, profiles, policy, allow_predicted, battery_profile)
    return _Bound(f"{b.describe()} ({inner.label})", inner.cost, inner.cap, inner.unit)


def _battery_profile(atoms: Sequence[Budget], points: Sequence[FrontPoint]) -> str | None:
    """The profile whose energy a battery budget caps (see the module docstring)."""
    for a in atoms:
        if isinstance(a, (LatencyBudget, EnergyBudget)) and a.profile is not None:
            return a.profile
    complete = [k for k in sorted(_profiles_in(points)) if all(k in p.energy_mj for p in points)]
    return complete[0] if len(complete) == 1 else None


def select(
    points: Sequence[FrontPoint],
    budget: str | Budget | Sequence[str | Budget],
    profiles: Sequence[str] = (),
    policy: BatteryPolicy | None = None,
    fallback: str | None = None,
    allow_predicted: bool = False,
    metric: Metric | None = None,
) -> FrontPoint:
    """The best point of ``points`` under ``budget`` (anything :func:`as_budget` accepts).

    Among the points satisfying every budget, the best by ``metric`` (the front's
    :attr:`~pareco_runtime.manifest.Front.metric`; default top-1) in its direction, as
    :meth:`~pareco_runtime.manifest.Metric.ranking` orders them: the figure the front was chosen on
    (``selection_top1``); where no point has one, the reported one (``top1``); for top-1 where no point
    has one, the lowest ``loss``; where neither, the most MFLOPs; ties to fewer MFLOPs, then the
    smaller id. ``profiles``: the device profiles the manifest declares (a profile named in a budget
    must be one of them or appear in the points). ``policy``: the battery policy (default
    :class:`BatteryPolicy()`). ``allow_predicted``: a point without a measured latency may use its
    predicted one. When no point satisfies, :class:`BudgetUnmetError`, or with
    ``fallback="cheapest"`` the point cheapest in the first unmet budget's resource. Raises
    :class:`ProfileError` for a latency or energy budget without a usable profile.
    """
    if fallback not in (None, "cheapest"):
        raise ValueError(f"fallback is None or 'cheapest', got {fallback!r}")
    if not points:
        raise ValueError("no front points to select from")
    policy = policy if policy is not None else BatteryPolicy()
    atoms = _atoms(as_budget(budget))
    battery_profile = _battery_profile(atoms, points)
    bounds = [_bound(a, points, profiles, policy, allow_predicted, battery_profile) for a in atoms]

    merit = (metric or Metric()).ranking(points)

    def rank(p: FrontPoint) -> tuple[float, float, str]:
        return merit(p), p.mflops, p.id

    eligible = list(points)
    for i, bound in enumerate(bounds):
        kept = [p for p in eligible if bound.ok(p)]
        if not kept:
            return _unmet(bound, bounds[:i], eligible, points, fallback, rank)
        eligible = kept
    return min(eligible, key=rank)


def _unmet(
    bound: _Bound,
    before: Sequence[_Bound],
    eligible: Sequence[FrontPoint],
    points: Sequence[FrontPoint],
    fallback: str | None,
    rank: Callable[[FrontPoint], tuple[float, float, str]],
) -> FrontPoint:
    """Handle the first budget that leaves no point: the fallback point, or BudgetUnmetError.

    ``eligible``: the points meeting the budgets ``before`` it. The fallback is the point cheapest in
    this budget's resource among them, else among all points (some point has a cost:
    :func:`_resolve_profile` checked).
    """

    def cheapest(pool: Sequence[FrontPoint]) -> tuple[FrontPoint, float] | None:
        costed = [(p, c) for p in pool if (c := bound.cost(p)) is not None]
        return min(costed, key=lambda pc: (pc[1], rank(pc[0]))) if costed else None

    found = cheapest(points)
    if found is None:
        raise AssertionError("_resolve_profile guarantees a point with this cost")
    overall, overall_cost = found
    among = cheapest(eligible)
    if fallback == "cheapest":
        return among[0] if among is not None else overall
    cheapest_overall = f"the cheapest point is {overall.id!r} at {bound.unit(overall_cost)}"
    if not bound.ok(overall):
        why = cheapest_overall
    else:
        others = " and ".join(b.label for b in before)
        why = (
            f"it conflicts with {others}: among the points meeting those, the cheapest is {among[0].id!r} at "
            f"{bound.unit(among[1])}"
            if among is not None
            else f"it conflicts with {others}: no point meeting those has this measurement; {cheapest_overall}"
        )
    raise BudgetUnmetError(f"no front point satisfies {bound.label}; {why}")


@dataclass(frozen=True)
class Choice:
    """A program chosen under a budget: the front ``point`` and its ``variant`` (None: the fp32 point)."""

    point: FrontPoint
    variant: Variant | None = None

    @property
    def precision(self) -> str:
        """ "fp32", or the variant's precision."""
        return "fp32" if self.variant is None else self.variant.precision

    def describe(self) -> str:
        """The point id and, for a variant, its precision and backend: ``p03``, ``p05 (int8, executorch)``."""
        if self.variant is None:
            return self.point.id
        return f"{self.point.id} ({self.variant.precision}, {self.variant.backend})"

    def as_point(self) -> FrontPoint:
        """The program's figures as a point, as :func:`choose` ranks it: the point itself for fp32; for a
        variant (id ``<id>/<precision>-<backend>``), the point's MACs and parameters, the variant's
        latencies, the point's top-1 figures less the measured drop, or on a front ranked by its own
        metric each of its figures moved by the variant's measured change (see the module docstring)."""
        v = self.variant
        if v is None:
            return self.point
        drop = v.drop

        def less(x: float | None) -> float | None:
            return None if x is None or drop is None else x - drop

        change = {k: v.metrics[k] - v.fp32_metrics[k] for k in v.metrics if k in v.fp32_metrics}

        def moved(figures: dict[str, float]) -> dict[str, float]:
            return {k: x + change[k] for k, x in figures.items() if k in change}

        p = self.point
        return dataclasses.replace(
            p,
            id=f"{p.id}/{v.precision}-{v.backend}",
            top1=less(p.top1),
            selection_top1=less(p.selection_top1),
            metrics=moved(p.metrics),
            selection_metrics=moved(p.selection_metrics),
            loss=None,
            latency_ms=dict(v.latency_ms),
            energy_mj={},
            latency_predicted_ms={},
            eval_top1={},
            eval_loss={},
            variants=[],
        )


def choose(
    points: Sequence[FrontPoint],
    budget: str | Budget | Sequence[str | Budget],
    profiles: Sequence[str] = (),
    policy: BatteryPolicy | None = None,
    fallback: str | None = None,
    allow_predicted: bool = False,
    precision: str | None = None,
    metric: Metric | None = None,
) -> Choice:
    """The best program under ``budget`` among the fp32 points and their variants (see "Precisions").

    ``precision``: None (any), "fp32" (as :func:`select`) or "int8" (variants only; ValueError when no
    point has one). The other arguments are :func:`select`'s, whose rules and errors apply, with a
    variant named ``<id>/<precision>-<backend>`` in messages.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    options: dict[int, Choice] = {}
    pool: list[FrontPoint] = []
    for p in points:
        if precision in (None, "fp32"):
            pool.append(p)
            options[id(p)] = Choice(p)
        for v in p.variants:
            if precision in (None, v.precision):
                choice = Choice(p, v)
                view = choice.as_point()
                pool.append(view)
                options[id(view)] = choice
    if not pool:
        raise ValueError(
            f"no point has a {precision} variant; export them with `pareco export --int8 --calib DATA`"
        )
    return options[id(select(pool, budget, profiles, policy, fallback, allow_predicted, metric))]
