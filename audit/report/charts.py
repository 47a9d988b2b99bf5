"""Geometry of metric-history line charts, drawn as inline SVG by `macros/chart.html.j2`.

This module only computes numbers. Every coordinate and tick label leaves it as a short string of
digits, so the template does no arithmetic, the output is byte-identical for the same input, and
the only untrusted text (the title and series labels) reaches the page through Jinja2
autoescaping.

Coordinates are SVG user units in a `0 0 width height` viewBox, y growing downward.

More than `MAX_SERIES` series: the first `MAX_SERIES` are drawn and a note says how many were
left out. A report should not fail because a run logged one more dataset context than expected;
callers that want every series visible split them into several charts beforehand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["MAX_SERIES", "Box", "Chart", "Line", "Series", "Tick", "line_chart"]

MAX_SERIES = 6

# The template draws text at 10px. Digits of DejaVu Sans, WeasyPrint's usual fallback and among
# the widest sans fonts, are 0.64em: margins sized with it do not clip labels in other fonts.
_FONT_SIZE = 10.0
_CHAR_WIDTH = 6.4
_LABEL_GAP = 6.0  # between an axis and its tick labels
_TICK_LENGTH = 4.0
_TOP = 10.0  # room for the upper half of the top y tick label
_BOTTOM = 36.0  # x tick labels, then the x axis label
# Inset of the y range inside the plot box, in pixels rather than data units: lines never touch
# the frame, and the axis does not grow by a whole tick just to make room.
_Y_INSET = 8.0
# Shifts a baseline so that digits (cap height ~0.73em) are centred on a grid line.
_CENTRE_DIGITS = 0.36 * _FONT_SIZE
_VALUE_LABEL_SPACING = 11.0
_MIN_Y_TICK_SPACING = 14.0
_MIN_X_LABEL_GAP = 10.0
# Beyond this, differences of data values overflow floats; such values are not drawn.
_LIMIT = 1e300
# Below this, tick arithmetic meets subnormal floats; such a range is drawn as constant.
_TINY = 1e-290

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


@dataclass(frozen=True)
class Series:
    """One metric history: (step, value) pairs in any order; NaN and infinities are skipped."""

    label: str
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Box:
    """The plot area; `center_*` places the message of an empty chart."""

    left: str
    top: str
    right: str
    bottom: str
    width: str
    height: str
    center_x: str
    center_y: str


@dataclass(frozen=True)
class Tick:
    """A grid line (y axis) or tick mark (x axis) from (x1, y1) to (x2, y2), and its label."""

    x1: str
    y1: str
    x2: str
    y2: str
    label_x: str
    label_y: str
    label: str


@dataclass(frozen=True)
class Line:
    """One drawn series: a polyline, a marker on its last point, and the last value beside it."""

    label: str
    index: int  # position of the series in the input, so its colour follows the caller's order
    css_class: str  # "series-0" .. "series-5"
    points: str  # "x,y x,y ..."
    count: int  # distinct points in `points`
    last_x: str
    last_y: str
    value: str  # the last value, formatted short
    value_x: str
    value_y: str  # baseline, moved apart from the other series' value labels


@dataclass(frozen=True)
class Chart:
    """Everything `macros/chart.html.j2` draws; numbers are already strings."""

    title: str
    width: int
    height: int
    plot: Box
    lines: tuple[Line, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    x_label: str
    x_label_x: str
    x_label_y: str
    notes: tuple[str, ...]
    legend: bool  # more than one series was asked for: lines need names
    empty: bool  # nothing to draw; the template shows a message in the plot box


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    width: int = 640,
    height: int = 220,
    max_points: int = 500,
    x_label: str = "step",
) -> Chart:
    """Lay out a line chart of metric histories: value over step, one line per series."""
    if width < 200 or height < 120:
        raise ValueError(f"a chart needs at least 200x120 units, got {width}x{height}")
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")

    notes: list[str] = []
    shown = list(series[:MAX_SERIES])
    named = len(shown) > 1
    cleaned: list[tuple[int, Series, list[tuple[float, float]]]] = []
    for index, one in enumerate(shown):
        prefix = f"{one.label}: " if named else ""
        points, skipped, too_large = _finite_sorted(one.points)
        if skipped:
            notes.append(f"{prefix}{_count(skipped, 'non-finite value')} not drawn")
        if too_large:
            notes.append(f"{prefix}{_count(too_large, 'value')} beyond ±1e300 not drawn")
        if not points:
            if not skipped and not too_large:
                notes.append(f"{prefix}no values")
            continue
        if len(points) > max_points:
            before = len(points)
            points = _downsample(points, max_points)
            notes.append(f"{prefix}downsampled from {before:,} to {len(points):,} points")
        cleaned.append((index, one, points))
    if len(series) > MAX_SERIES:
        hidden = len(series) - MAX_SERIES
        notes.append(f"{hidden} more series not shown (at most {MAX_SERIES} per chart)")

    if not cleaned:
        return _empty_chart(title, width, height, x_label, tuple(notes), named)

    steps = [p[0] for _, _, points in cleaned for p in points]
    values = [p[1] for _, _, points in cleaned for p in points]
    last_values = [_short(points[-1][1]) for _, _, points in cleaned]

    y_lo, y_hi = _spread(min(values), max(values), min_half=0.0)
    usable_height = height - _TOP - _BOTTOM - 2 * _Y_INSET
    y_step, y_values = next(
        (step, ticks)
        for step, ticks in _covering_ticks(y_lo, y_hi)
        if usable_height / (len(ticks) - 1) >= _MIN_Y_TICK_SPACING
    )
    y_lo, y_hi = y_values[0], y_values[-1]
    y_format = _axis_format(y_values, y_step)
    y_labels = [y_format(v) for v in y_values]
    left = _LABEL_GAP + _text_width(y_labels) + _LABEL_GAP
    right = max(12.0, _LABEL_GAP + _text_width(last_values) + 4.0)

    # One step either side of a single step, so its point sits mid-plot.
    x_lo, x_hi = _spread(min(steps), max(steps), min_half=1.0)
    if (x_lo, x_hi) != (min(steps), max(steps)):
        # Only the logged step is labelled: ticks at neighbouring steps would suggest data there
        # (and a negative step, around step 0).
        x_values, x_labels = [steps[0]], [_short(steps[0])]
    else:
        min_step = 1.0 if all(s.is_integer() for s in steps) else 0.0
        for x_step, x_values in _inner_ticks(x_lo, x_hi, min_step=min_step):
            x_format = _axis_format(x_values, x_step)
            x_labels = [x_format(v) for v in x_values]
            label_width = _text_width(x_labels)
            # Narrow charts get fewer x ticks rather than labels running into each other.
            plot_width = width - max(left, label_width / 2) - max(right, label_width / 2)
            if x_step / (x_hi - x_lo) * plot_width >= label_width + _MIN_X_LABEL_GAP:
                break

    left = max(left, _text_width(x_labels[:1]) / 2 + 2.0)
    right_margin = max(right, _text_width(x_labels[-1:]) / 2 + 2.0)
    box_left, box_top = round(left), _TOP
    box_right, box_bottom = round(width - right_margin), height - _BOTTOM

    def px(step: float) -> float:
        return box_left + (step - x_lo) / (x_hi - x_lo) * (box_right - box_left)

    def py(value: float) -> float:
        usable = box_bottom - box_top - 2 * _Y_INSET
        return box_bottom - _Y_INSET - (value - y_lo) / (y_hi - y_lo) * usable

    x_ticks = tuple(
        Tick(
            x1=_num(px(v)),
            y1=_num(box_bottom),
            x2=_num(px(v)),
            y2=_num(box_bottom + _TICK_LENGTH),
            label_x=_num(px(v)),
            label_y=_num(box_bottom + _TICK_LENGTH + _FONT_SIZE + 1),
            label=label,
        )
        for v, label in zip(x_values, x_labels, strict=True)
    )
    y_ticks = tuple(
        Tick(
            x1=_num(box_left),
            y1=_num(py(v)),
            x2=_num(box_right),
            y2=_num(py(v)),
            label_x=_num(box_left - _LABEL_GAP),
            label_y=_num(py(v) + _CENTRE_DIGITS),
            label=label,
        )
        for v, label in zip(y_values, y_labels, strict=True)
    )

    ends = [py(points[-1][1]) for _, _, points in cleaned]
    label_centres = _spread_apart(ends, box_top, box_bottom, _VALUE_LABEL_SPACING)
    lines: list[Line] = []
    for (index, one, points), value, centre in zip(
        cleaned, last_values, label_centres, strict=True
    ):
        drawn = _point_list([(px(s), py(v)) for s, v in points])
        lines.append(
            Line(
                label=one.label,
                index=index,
                css_class=f"series-{index}",
                points=" ".join(drawn),
                count=len(drawn),
                last_x=_num(px(points[-1][0])),
                last_y=_num(py(points[-1][1])),
                value=value,
                value_x=_num(box_right + _LABEL_GAP),
                value_y=_num(centre + _CENTRE_DIGITS),
            )
        )

    return Chart(
        title=title,
        width=width,
        height=height,
        plot=_box(box_left, box_top, box_right, box_bottom),
        lines=tuple(lines),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        x_label=x_label,
        x_label_x=_num((box_left + box_right) / 2),
        x_label_y=_num(height - 5),
        notes=tuple(notes),
        legend=named,
        empty=False,
    )


def _empty_chart(
    title: str, width: int, height: int, x_label: str, notes: tuple[str, ...], named: bool
) -> Chart:
    left, right = _LABEL_GAP * 2, width - 12.0
    return Chart(
        title=title,
        width=width,
        height=height,
        plot=_box(left, _TOP, right, height - _BOTTOM),
        lines=(),
        x_ticks=(),
        y_ticks=(),
        x_label=x_label,
        x_label_x=_num((left + right) / 2),
        x_label_y=_num(height - 5),
        notes=notes,
        legend=named,
        empty=True,
    )


def _box(left: float, top: float, right: float, bottom: float) -> Box:
    return Box(
        left=_num(left),
        top=_num(top),
        right=_num(right),
        bottom=_num(bottom),
        width=_num(right - left),
        height=_num(bottom - top),
        center_x=_num((left + right) / 2),
        center_y=_num((top + bottom) / 2 + _CENTRE_DIGITS),
    )


def _finite_sorted(
    points: Sequence[tuple[float, float]],
) -> tuple[list[tuple[float, float]], int, int]:
    kept: list[tuple[float, float]] = []
    skipped = too_large = 0
    for step, value in points:
        s, v = float(step), float(value)
        if not (math.isfinite(s) and math.isfinite(v)):
            skipped += 1
        elif abs(s) > _LIMIT or abs(v) > _LIMIT:
            too_large += 1
        else:
            kept.append((s, v))
    # Stable: values logged twice at one step keep their logging order.
    kept.sort(key=lambda p: p[0])
    return kept, skipped, too_large


def _downsample(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """Keep the first and last points and the min and max of each of equal-width step buckets.

    Unlike LTTB, min/max buckets provably keep every extreme, so a spike or a collapse in a long
    history stays visible after thinning. `points` is sorted by step.
    """
    buckets = (max_points - 2) // 2
    first, last = points[0][0], points[-1][0]
    span = last - first
    keep = {0, len(points) - 1}
    low = high = -1
    current = -1
    for i in range(1, len(points) - 1):
        step, value = points[i]
        bucket = min(buckets - 1, int((step - first) / span * buckets)) if span > 0 else 0
        if bucket != current:
            keep.update(j for j in (low, high) if j >= 0)
            current, low, high = bucket, i, i
        if value < points[low][1]:
            low = i
        if value > points[high][1]:
            high = i
    keep.update(j for j in (low, high) if j >= 0)
    return [points[i] for i in sorted(keep)]


def _spread(lo: float, hi: float, *, min_half: float) -> tuple[float, float]:
    """Widen a degenerate range (one value, or differences below float resolution) around it."""
    if hi - lo > max(abs(lo), abs(hi)) * 1e-9 and hi - lo > _TINY:
        return lo, hi
    middle = (lo + hi) / 2
    if abs(middle) <= _TINY:
        middle = 0.0
    half = max(abs(middle) * 0.1, min_half) if middle else max(1.0, min_half)
    return middle - half, middle + half


def _candidate_steps(span: float) -> list[tuple[int, int]]:
    """Steps of the 1-2-5 sequence around span/5, as (mantissa, exponent of ten)."""
    exponent = math.floor(math.log10(span / 5))
    return [(m, e) for e in range(exponent - 1, exponent + 3) for m in (1, 2, 5)]


def _tick_value(i: int, mantissa: int, exponent: int) -> float:
    # Dividing by an exact power of ten rounds once, so 3 x 0.1 comes out as 0.3, not
    # 0.30000000000000004, and a tick on a data value compares equal to it.
    if exponent >= 0:
        return float(i * mantissa * 10**exponent)
    denominator: int = 10**-exponent
    return i * mantissa / denominator


def _step(mantissa: int, exponent: int) -> float:
    return _tick_value(1, mantissa, exponent)


def _covering_ticks(lo: float, hi: float) -> list[tuple[float, list[float]]]:
    """Nice ticks from at or below `lo` to at or above `hi`, best first, as (step, ticks).

    The last candidate has two ticks, so a caller looking for one that fits always finds one.
    """
    scored: list[tuple[float, int, float, list[float]]] = []
    for mantissa, exponent in _candidate_steps(hi - lo):
        step = _step(mantissa, exponent)
        first, last = math.floor(lo / step), math.ceil(hi / step)
        if _tick_value(first, mantissa, exponent) > lo:
            first -= 1
        if _tick_value(last, mantissa, exponent) < hi:
            last += 1
        ticks = [_tick_value(i, mantissa, exponent) for i in range(first, last + 1)]
        waste = 1 - (hi - lo) / (ticks[-1] - ticks[0])
        # A seventh tick costs less than a third of the axis left empty (-5M..10M for data
        # from -5M to 5.3M); ties go to fewer labels.
        scored.append((waste + 0.12 * _outside(len(ticks)), len(ticks), step, ticks))
    scored.sort(key=lambda c: (c[0], c[1]))
    fallback = min(scored, key=lambda c: c[1])
    return [(step, ticks) for _, _, step, ticks in [*scored, fallback]]


def _inner_ticks(lo: float, hi: float, *, min_step: float) -> list[tuple[float, list[float]]]:
    """Nice ticks inside [lo, hi], best first: the x axis spans exactly the logged steps.

    The last candidate has the fewest ticks, so a caller looking for one that fits finds one.
    """
    scored: list[tuple[int, float, int, float, list[float]]] = []
    for mantissa, exponent in _candidate_steps(hi - lo):
        step = _step(mantissa, exponent)
        if step < min_step:
            continue
        first, last = math.ceil(lo / step), math.floor(hi / step)
        if _tick_value(first, mantissa, exponent) < lo:
            first += 1
        if _tick_value(last, mantissa, exponent) > hi:
            last -= 1
        ticks = [_tick_value(i, mantissa, exponent) for i in range(first, last + 1)]
        if ticks:
            spread = (ticks[-1] - ticks[0]) / (hi - lo)
            scored.append((_outside(len(ticks)), -spread, len(ticks), step, ticks))
    if not scored:  # a range narrower than min_step: label its ends
        return [(hi - lo, [lo, hi])]
    scored.sort(key=lambda c: (c[0], c[1], c[2]))
    fallback = min(scored, key=lambda c: (c[2], -c[3]))
    return [(step, ticks) for *_, step, ticks in [*scored, fallback]]


def _outside(count: int) -> int:
    return max(0, 4 - count, count - 6)


def _axis_format(values: Sequence[float], step: float) -> Callable[[float], str]:
    """One format for every tick of an axis, precise enough to tell neighbouring ticks apart."""
    biggest = max((abs(v) for v in values), default=0.0)
    if biggest == 0:
        return lambda v: "0"
    step_exponent = _exponent(step)
    if biggest >= 1e15 or biggest < 1e-3:
        exponent = _exponent(biggest)
        decimals = max(0, exponent - step_exponent)
        scale = 10.0**exponent

        def scientific(v: float) -> str:
            return "0" if v == 0 else _clean(f"{v / scale:.{decimals}f}") + f"e{exponent}"

        return scientific
    if biggest >= 1e4:
        unit, suffix = next((u, s) for u, s in _SI if biggest >= u)
        decimals = max(0, _exponent(unit) - step_exponent)
        return lambda v: "0" if v == 0 else _clean(f"{v / unit:.{decimals}f}") + suffix
    decimals = max(0, -step_exponent)
    return lambda v: _clean(f"{v:.{decimals}f}")


def _short(value: float) -> str:
    """A value in at most four significant digits: the last-value labels."""
    rounded = float(f"{value:.4g}")
    size = abs(rounded)
    if size == 0:
        return "0"
    if size >= 1e15 or size < 1e-3:
        mantissa, _, exponent = f"{rounded:.3e}".partition("e")
        return f"{_trim(mantissa)}e{int(exponent)}"
    if size >= 1e4:
        unit, suffix = next((u, s) for u, s in _SI if size >= u)
        return _trim(f"{rounded / unit:.4g}") + suffix
    return _trim(f"{rounded:.4g}")


def _exponent(value: float) -> int:
    # The epsilon absorbs log10 landing a hair below an exact power of ten.
    return math.floor(math.log10(abs(value)) + 1e-9)


def _trim(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return _clean(text)


def _clean(text: str) -> str:
    """Drop the sign of a zero that rounding produced ("-0.00")."""
    if text.startswith("-") and not text.strip("-0."):
        return text[1:]
    return text


def _num(value: float) -> str:
    """A coordinate: one decimal is a tenth of a pixel at the default size, enough for print."""
    return _trim(f"{value:.1f}")


def _point_list(points: Sequence[tuple[float, float]]) -> list[str]:
    pairs: list[str] = []
    for x, y in points:
        pair = f"{_num(x)},{_num(y)}"
        # Points closer than the output precision add bytes, not detail.
        if not pairs or pairs[-1] != pair:
            pairs.append(pair)
    return pairs


def _spread_apart(centres: Sequence[float], top: float, bottom: float, gap: float) -> list[float]:
    """Move label centres at least `gap` apart, as little as possible, within [top, bottom]."""
    order = sorted(range(len(centres)), key=lambda i: (centres[i], i))
    placed = [min(max(centres[i], top), bottom) for i in order]
    for k in range(1, len(placed)):
        placed[k] = max(placed[k], placed[k - 1] + gap)
    if placed and placed[-1] > bottom:
        placed[-1] = bottom
        for k in range(len(placed) - 2, -1, -1):
            placed[k] = min(placed[k], placed[k + 1] - gap)
    result = [0.0] * len(centres)
    for k, i in enumerate(order):
        result[i] = placed[k]
    return result


def _text_width(labels: Sequence[str]) -> float:
    return max((len(label) for label in labels), default=0) * _CHAR_WIDTH


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
