"""Metric history charts: geometry in `audit.report.charts`, SVG from `macros/chart.html.j2`."""

from __future__ import annotations

import io
import itertools
import math
import random
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import jinja2
import pytest

from audit.report import charts
from audit.report.charts import MAX_SERIES, Chart, Line, Series, Tick, line_chart

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "train' onload='alert(1)",
    "a & b </title><script>x</script>",
)
SUFFIXES = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
# Everything the template may write: an injected label would have to add to these.
SAFE_ATTRIBUTES = {
    "class",
    "xmlns",
    "viewBox",
    "width",
    "height",
    "role",
    "aria-label",
    "aria-hidden",
    "font-size",
    "x",
    "y",
    "x1",
    "y1",
    "x2",
    "y2",
    "cx",
    "cy",
    "r",
    "fill",
    "stroke",
    "stroke-width",
    "stroke-linejoin",
    "stroke-linecap",
    "stroke-dasharray",
    "points",
    "text-anchor",
}


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible test data, not secrets


def parse(markup: str) -> ET.Element:
    # Parsing as XML is the point: the chart must be well-formed. The input is our own output.
    return ET.fromstring(markup)  # noqa: S314


def points_of(line: Line) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in line.points.split())]


def value_of(label: str) -> float:
    if label[-1] in SUFFIXES:
        return float(label[:-1]) * SUFFIXES[label[-1]]
    return float(label)


def tick_values(ticks: Sequence[Tick]) -> list[float]:
    return [value_of(t.label) for t in ticks]


def assert_nice(values: Sequence[float]) -> float:
    """Evenly spaced multiples of a 1-2-5 step; returns the step."""
    step = values[1] - values[0]
    for a, b in itertools.pairwise(values):
        assert math.isclose(b - a, step, rel_tol=1e-6), values
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5)), values
    for v in values:
        assert math.isclose(v / step, round(v / step), abs_tol=1e-6), values
    return step


def box(chart: Chart) -> tuple[float, float, float, float]:
    plot = chart.plot
    return float(plot.left), float(plot.top), float(plot.right), float(plot.bottom)


def history(n: int, start: float = 2.0, end: float = 0.1) -> list[tuple[float, float]]:
    return [(i, start + (end - start) * i / max(n - 1, 1)) for i in range(n)]


# Geometry


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (0.0931, 2.61),
        (0.9102, 0.9311),
        (-5e6, 5.27e6),
        (1.0e-5, 2.18e-5),
        (-3.7, -1.2),
        (0.0, 1.0),
        (123_456.0, 987_654.0),
        (3e-12, 7.5e-12),
        (2.5e17, 9e17),
        (-0.004, 0.0031),
    ],
)
def test_y_ticks_are_nice_and_cover_the_data(lo: float, hi: float) -> None:
    chart = line_chart("m", [Series("m", [(0, lo), (5, (lo + hi) / 2), (10, hi)])])
    values = tick_values(chart.y_ticks)
    assert 4 <= len(values) <= 7, [t.label for t in chart.y_ticks]
    assert_nice(values)
    assert values[0] <= lo + abs(lo) * 1e-9
    assert values[-1] >= hi - abs(hi) * 1e-9
    # Ticks are listed bottom to top: their grid lines climb, y growing downward.
    heights = [float(t.y1) for t in chart.y_ticks]
    assert heights == sorted(heights, reverse=True)
    [line] = chart.lines
    ys = [y for _, y in points_of(line)]
    assert heights[-1] <= min(ys) and max(ys) <= heights[0]


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        (99, ["0", "20", "40", "60", "80"]),
        (120_000, ["0", "20k", "40k", "60k", "80k", "100k", "120k"]),
    ],
)
def test_x_ticks_are_nice_steps_inside_the_logged_range(last: int, expected: list[str]) -> None:
    chart = line_chart("m", [Series("m", [(0, 1.0), (last, 2.0)])])
    assert [t.label for t in chart.x_ticks] == expected
    assert float(chart.x_ticks[0].x1) == float(chart.plot.left)


def test_integer_steps_get_integer_ticks() -> None:
    chart = line_chart("m", [Series("m", [(0, 1.0), (1, 0.5), (2, 0.25)])])
    assert [t.label for t in chart.x_ticks] == ["0", "1", "2"]


def test_one_format_per_axis() -> None:
    chart = line_chart("lr", [Series("lr", history(60, 1e-5, 2.18e-5))])
    labels = [t.label for t in chart.y_ticks]
    assert all(label.endswith("e-5") for label in labels), labels
    assert len({len(label) for label in labels}) == 1, labels  # 1.0e-5, 1.5e-5, ...

    chart = line_chart("auc", [Series("auc", history(50, 0.9102, 0.9311))])
    decimals = {len(t.label.partition(".")[2]) for t in chart.y_ticks}
    assert decimals == {3}, [t.label for t in chart.y_ticks]


def test_negative_and_huge_values_use_short_labels() -> None:
    chart = line_chart("m", [Series("m", history(80, -5e6, 5.27e6))])
    labels = [t.label for t in chart.y_ticks]
    assert "0" in labels
    assert all(re.fullmatch(r"-?\d+(\.\d+)?M|0", label) for label in labels), labels
    assert chart.lines[0].value == "5.27M"


@pytest.mark.parametrize(
    "values",
    [
        [2.3 * math.exp(-i / 25) + 0.1 for i in range(100)],
        [(-1) ** i * 1e6 * i for i in range(30)],
        [1e-9 * math.sin(i) for i in range(40)],
        [42.0] * 7,
    ],
)
def test_points_lie_inside_the_plot_box(values: list[float]) -> None:
    chart = line_chart("m", [Series("m", list(enumerate(values))), Series("n", [(3, values[0])])])
    left, top, right, bottom = box(chart)
    for line in chart.lines:
        for x, y in [*points_of(line), (float(line.last_x), float(line.last_y))]:
            assert left <= x <= right and top <= y <= bottom, (x, y)


def test_extreme_inputs_never_break_the_layout() -> None:
    rng = seeded(7)
    magnitudes = [0.0, 5e-324, 1e-300, 1e-12, 1.0, 1e12, 1e299, 1e300]
    for _ in range(300):
        series = []
        for _ in range(rng.randint(1, 3)):
            series.append(
                Series(
                    "s",
                    [
                        (rng.choice([0, 1, 7, 1e9]) + rng.random(), rng.choice([-1, 1]) * m)
                        for m in rng.choices(magnitudes, k=rng.randint(1, 6))
                    ],
                )
            )
        chart = line_chart("fuzz", series)
        left, top, right, bottom = box(chart)
        for line in chart.lines:
            for x, y in points_of(line):
                assert left <= x <= right and top <= y <= bottom
        assert chart.y_ticks and chart.x_ticks
        assert len({t.label for t in chart.y_ticks}) == len(chart.y_ticks)


def test_downsampling_keeps_the_extremes_and_bounds_the_count() -> None:
    rng = seeded(1)
    points = [(i, rng.gauss(0.5, 0.05)) for i in range(120_000)]
    points[31_337] = (31_337, 3.0)  # one spike up, one collapse: both must survive thinning
    points[77_777] = (77_777, -2.0)
    full = line_chart("m", [Series("m", points)], max_points=len(points))
    thin = line_chart("m", [Series("m", points)])
    [full_line], [thin_line] = full.lines, thin.lines
    assert thin_line.count <= 500
    ys = [y for _, y in points_of(thin_line)]
    full_ys = [y for _, y in points_of(full_line)]
    assert min(ys) == min(full_ys) and max(ys) == max(full_ys)
    assert points_of(thin_line)[0] == points_of(full_line)[0]
    assert points_of(thin_line)[-1] == points_of(full_line)[-1]
    assert "downsampled from 120,000 to" in thin.notes[0]
    assert full.notes == ()


def test_downsample_keeps_global_min_and_max_at_any_size() -> None:
    rng = seeded(3)
    for _ in range(200):
        n = rng.randint(5, 400)
        steps = sorted(rng.choice([rng.random() * 50, float(rng.randint(0, 9))]) for _ in range(n))
        points = [(s, rng.uniform(-1, 1)) for s in steps]
        budget = rng.randint(4, n - 1)
        kept = charts._downsample(points, budget)
        assert len(kept) <= budget
        assert kept[0] == points[0] and kept[-1] == points[-1]
        assert min(v for _, v in kept) == min(v for _, v in points)
        assert max(v for _, v in kept) == max(v for _, v in points)
        assert kept == [p for p in points if p in kept]  # a subsequence, order kept


def test_non_finite_values_are_skipped_and_counted() -> None:
    nan, inf = float("nan"), float("inf")
    points = [(0, 1.0), (1, nan), (2, 0.5), (3, inf), (4, -inf), (5, 0.25), (nan, 0.1)]
    chart = line_chart("loss", [Series("loss", points)])
    assert chart.lines[0].count == 3
    assert chart.notes == ("4 non-finite values not drawn",)

    chart = line_chart("loss", [Series("train", points), Series("val", [(0, 1.0), (1, nan)])])
    assert chart.notes == (
        "train: 4 non-finite values not drawn",
        "val: 1 non-finite value not drawn",
    )


def test_nothing_finite_gives_an_empty_chart() -> None:
    chart = line_chart("loss", [Series("loss", [(0, float("nan"))])])
    assert chart.empty and chart.lines == () and chart.y_ticks == ()
    assert chart.notes == ("1 non-finite value not drawn",)
    assert line_chart("loss", []).empty


def test_single_point_is_centred_with_ticks_around_it() -> None:
    chart = line_chart("acc", [Series("acc", [(3, 0.5)])])
    [line] = chart.lines
    assert line.count == 1 and line.value == "0.5"
    left, top, right, bottom = box(chart)
    assert float(line.last_x) == pytest.approx((left + right) / 2, abs=0.1)
    assert float(line.last_y) == pytest.approx((top + bottom) / 2, abs=0.1)
    assert [t.label for t in chart.x_ticks] == ["3"]
    assert 0.5 in tick_values(chart.y_ticks)


def test_single_step_labels_only_that_step() -> None:
    chart = line_chart("acc", [Series("acc", [(0, 0.0)])])
    assert [t.label for t in chart.x_ticks] == ["0"]
    assert chart.x_ticks[0].x1 == chart.lines[0].last_x
    assert tick_values(chart.y_ticks)[0] < 0 < tick_values(chart.y_ticks)[-1]
    chart = line_chart("acc", [Series("a", [(7, 0.1), (7, 0.2)]), Series("b", [(7, 0.3)])])
    assert [t.label for t in chart.x_ticks] == ["7"]


def test_constant_series_is_a_flat_line_inside_the_frame() -> None:
    chart = line_chart("m", [Series("m", [(i, 0.693) for i in range(20)])])
    [line] = chart.lines
    ys = {y for _, y in points_of(line)}
    assert len(ys) == 1
    _, top, _, bottom = box(chart)
    assert top < ys.pop() < bottom
    values = tick_values(chart.y_ticks)
    assert len(values) >= 3 and values[0] < 0.693 < values[-1]


def test_unsorted_steps_are_sorted_and_duplicates_kept_in_order() -> None:
    ordered = [(0, 3.0), (1, 2.0), (1, 2.5), (2, 1.0), (3, 0.5)]
    shuffled = [ordered[3], ordered[1], ordered[4], ordered[0], ordered[2]]
    a = line_chart("m", [Series("m", ordered)])
    b = line_chart("m", [Series("m", shuffled)])
    assert a == b
    xs = [x for x, _ in points_of(a.lines[0])]
    assert xs == sorted(xs)
    assert a.lines[0].count == 5  # two values at step 1: a vertical segment


def test_same_input_same_output() -> None:
    rng = seeded(5)
    series = [Series(f"s{k}", [(i, rng.random()) for i in range(2_000)]) for k in range(3)]
    assert line_chart("m", series) == line_chart("m", list(series))
    assert render(line_chart("m", series)) == render(line_chart("m", series))


def test_more_than_max_series_draws_the_first_and_says_so() -> None:
    series = [Series(f"ctx{k}", history(10, k, k + 1)) for k in range(MAX_SERIES + 2)]
    chart = line_chart("m", series)
    assert [line.label for line in chart.lines] == [f"ctx{k}" for k in range(MAX_SERIES)]
    assert [line.css_class for line in chart.lines] == [f"series-{k}" for k in range(MAX_SERIES)]
    assert chart.notes == (f"2 more series not shown (at most {MAX_SERIES} per chart)",)


def test_series_keep_their_colour_when_one_before_them_is_empty() -> None:
    chart = line_chart("m", [Series("train", []), Series("val", history(5))])
    assert [line.css_class for line in chart.lines] == ["series-1"]
    assert chart.legend
    assert chart.notes == ("train: no values",)


def test_last_value_labels_do_not_overlap() -> None:
    series = [Series(f"s{k}", [(0, 0.0), (10, 1.0 + k * 1e-3)]) for k in range(MAX_SERIES)]
    chart = line_chart("m", series)
    ys = sorted(float(line.value_y) for line in chart.lines)
    assert all(b - a >= 11 for a, b in itertools.pairwise(ys))
    assert ys[-1] <= float(chart.plot.bottom) + 4


@pytest.mark.parametrize(
    ("width", "height", "last_step", "scale"),
    [
        (640, 220, 120_000, 1.0),
        (320, 200, 120_000, 1.0),
        (200, 120, 10**9 + 7, 1e-7),
        (240, 150, 7, 1e6),
    ],
)
def test_tick_labels_never_collide(width: int, height: int, last_step: int, scale: float) -> None:
    points = [(10**9 if last_step > 10**9 else 0, 0.0), (last_step, 3.3 * scale)]
    chart = line_chart("m", [Series("m", points)], width=width, height=height)
    xs = [float(t.label_x) for t in chart.x_ticks]
    widest = max(len(t.label) for t in chart.x_ticks) * 6.4
    assert all(b - a >= widest + 4 for a, b in itertools.pairwise(xs)), chart.x_ticks
    assert min(xs) - widest / 2 >= 0 and max(xs) + widest / 2 <= width
    ys = [float(t.label_y) for t in chart.y_ticks]
    assert all(a - b >= 12 for a, b in itertools.pairwise(ys)), chart.y_ticks
    assert float(chart.y_ticks[0].label_x) - max(len(t.label) for t in chart.y_ticks) * 6.4 >= 0


def test_coordinates_are_short_numeric_strings() -> None:
    chart = line_chart("m", [Series("m", history(300))])
    assert re.fullmatch(r"[0-9.,\- ]+", chart.lines[0].points)
    assert all(
        re.fullmatch(r"\d+(\.\d)?", p)
        for pair in chart.lines[0].points.split()
        for p in pair.split(",")
    )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_points"):
        line_chart("m", [], max_points=3)
    with pytest.raises(ValueError, match="at least"):
        line_chart("m", [], width=100)


# Rendering


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO / "report_templates"), autoescape=True
    )


def render(chart: Chart, environment: jinja2.Environment | None = None) -> str:
    environment = environment or jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO / "report_templates"), autoescape=True
    )
    template = environment.from_string(
        '{% from "macros/chart.html.j2" import line_chart %}{{ line_chart(chart) }}'
    )
    return template.render(chart=chart)


def two_series_chart(labels: Sequence[str] = ("train", "val"), title: str = "loss") -> Chart:
    return line_chart(
        title,
        [
            Series(labels[0], [*history(100), (100, float("nan"))]),
            Series(labels[1], history(20, 2.2, 0.3)),
        ],
    )


def test_macro_renders_well_formed_svg(env: jinja2.Environment) -> None:
    chart = two_series_chart()
    figure = parse(render(chart, env))
    assert figure.tag == "div" and figure.get("class") == "chart-body"
    svg = figure.find(f"{SVG}svg")
    assert svg is not None
    assert svg.get("viewBox") == "0 0 640 220"
    assert svg.get("role") == "img" and svg.get("aria-label") == "loss"
    assert svg.findtext(f"{SVG}title") == "loss"

    polylines = svg.findall(f".//{SVG}polyline")
    assert len(polylines) == 2
    for k, polyline in enumerate(polylines):
        assert polyline.get("class") == f"chart-line series-{k}"
        assert polyline.get("fill") == "none"
        assert polyline.get("points") == chart.lines[k].points
    assert len(svg.findall(f".//{SVG}circle")) == 2

    texts = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "chart-tick-label"]
    assert texts == [t.label for t in chart.y_ticks] + [t.label for t in chart.x_ticks]
    grid = svg.find(f"{SVG}g[@class='chart-grid']")
    assert grid is not None and len(grid) == len(chart.y_ticks)

    legend = figure.find("div[@class='chart-legend']")
    assert legend is not None
    assert [(item.find(f"{SVG}svg").tail or "").strip() for item in legend] == ["train", "val"]
    notes = [p.text for p in figure.findall("p[@class='chart-note']")]
    assert notes == ["train: 1 non-finite value not drawn"]


def test_single_series_has_no_legend(env: jinja2.Environment) -> None:
    figure = parse(render(line_chart("auc", [Series("auc", history(5))]), env))
    assert figure.find("div[@class='chart-legend']") is None
    assert figure.find("p") is None


def test_empty_chart_renders_a_message(env: jinja2.Environment) -> None:
    figure = parse(render(line_chart("auc", [Series("auc", [])]), env))
    svg = figure.find(f"{SVG}svg")
    assert svg is not None and svg.find(f".//{SVG}polyline") is None
    assert [t.text for t in svg.iter(f"{SVG}text")] == ["No values to draw"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_untrusted_labels_only_appear_escaped(env: jinja2.Environment, hostile: str) -> None:
    chart = two_series_chart(labels=(hostile, "val"), title=hostile)
    html = render(chart, env)
    assert "<script" not in html and "<img" not in html
    figure = parse(html)
    names = {element.tag.rpartition("}")[2] for element in figure.iter()}
    assert not names & {"script", "img"}
    assert all(set(e.attrib) <= SAFE_ATTRIBUTES for e in figure.iter()), "injected attribute"

    svg = figure.find(f"{SVG}svg")
    assert svg is not None
    assert svg.get("aria-label") == hostile
    assert svg.findtext(f"{SVG}title") == hostile
    assert svg.findtext(f".//{SVG}polyline/{SVG}title") == hostile
    legend = figure.find("div[@class='chart-legend']")
    assert legend is not None
    assert (legend[0].find(f"{SVG}svg").tail or "").strip() == hostile.strip()
    assert figure.findtext("p[@class='chart-note']") == f"{hostile}: 1 non-finite value not drawn"


def test_chart_in_a_pdf_keeps_one_page_and_real_text(env: jinja2.Environment) -> None:
    weasyprint = pytest.importorskip("weasyprint")
    pypdf = pytest.importorskip("pypdf")
    chart = two_series_chart()
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>r</title>'
        "<style>@page { size: A4; margin: 2cm }</style></head>"
        f"<body><h2>Performance</h2>{render(chart, env)}</body></html>"
    )
    pdf = weasyprint.HTML(string=page).write_pdf()
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    for label in [t.label for t in chart.y_ticks + chart.x_ticks] + ["step", "0.3", "0.1"]:
        assert label in text, label
