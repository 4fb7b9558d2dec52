"""PNG bar chart of billed hours per client, one panel per group.

matplotlib is optional (`pip install 'cdrstream[charts]'`) and imported only inside
`write_chart`, so that the CLI starts without it; it draws on an Agg canvas, never pyplot,
so no display and no global state are involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from streams.errors import CdrStreamError
from streams.report import (
    NO_CODE_CLIENT,
    NO_REGISTRY_CLIENT,
    UNKNOWN_CLIENT,
    BillingRow,
    Report,
    format_hours,
)

_BAR_HEIGHT_INCHES = 0.45
_PANEL_EXTRA_INCHES = 1.3
_CLIENT_COLOR = "#3b6ea5"
_UNKNOWN_COLOR = "#d9822b"
_NO_CODE_COLOR = "#9a9a9a"


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    hours: Decimal
    color: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    bars: tuple[Bar, ...]


def bar_color(row: BillingRow) -> str:
    """Blue for a client, orange for an unknown code, grey for calls with no code."""
    if row.account_code is None:
        return _NO_CODE_COLOR
    return _UNKNOWN_COLOR if row.client_name == UNKNOWN_CLIENT else _CLIENT_COLOR


def bar_label(row: BillingRow) -> str:
    """The client as shown on the chart: the registry name with its code."""
    if row.account_code is None:
        return NO_CODE_CLIENT
    if row.client_name in (UNKNOWN_CLIENT, NO_REGISTRY_CLIENT):
        return f"{row.account_code} {row.client_name}"
    return f"{row.client_name} ({row.account_code})"


def date_label(report: Report) -> str:
    if report.date is not None:
        return report.date
    if not report.dates:
        return "no calls"
    if len(report.dates) == 1:
        return report.dates[0]
    return f"{report.dates[0]} to {report.dates[-1]}"


def panels(report: Report) -> tuple[Panel, ...]:
    """What to draw: per group, billed hours per client, largest first."""
    when = date_label(report)
    out = []
    for group in report.groups:
        rows = [row for row in report.billing if row.group_id == group and row.billed_increments]
        rows.sort(key=lambda row: (-row.billed_ms, bar_label(row)))
        bars = tuple(Bar(bar_label(row), row.billed_hours, bar_color(row)) for row in rows)
        out.append(Panel(f"{group} \u2014 {when}", bars))
    if not out:
        out.append(Panel(f"{report.group or 'all groups'} \u2014 {when}", ()))
    return tuple(out)


def write_chart(report: Report, path: str | Path) -> Path:
    """Draw the billed hours per client of each group to a PNG file at `path`."""
    try:  # lazily, on purpose: matplotlib is optional and slow to import
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CdrStreamError(
            "--chart needs matplotlib, which is not installed; "
            "install it with: pip install 'cdrstream[charts]'"
        ) from None
    drawn = panels(report)
    heights = [
        max(len(panel.bars), 1) * _BAR_HEIGHT_INCHES + _PANEL_EXTRA_INCHES for panel in drawn
    ]
    figure = Figure(figsize=(10, sum(heights) + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(
        f"Billable hours per client ({report.policy.increment_minutes.normalize():f}-minute "
        "increments, rounded up per call)"
    )
    axes_list = figure.subplots(len(drawn), 1, squeeze=False, height_ratios=heights)[:, 0]
    for axes, panel in zip(axes_list, drawn, strict=True):
        axes.set_title(panel.title, loc="left", fontweight="bold")
        axes.set_xlabel("Billed hours")
        axes.set_ylabel("Client / matter")
        if not panel.bars:
            axes.text(0.5, 0.5, "no billable calls", ha="center", va="center",
                      transform=axes.transAxes)
            axes.set_yticks([])
            continue
        bars = list(reversed(panel.bars))  # barh draws bottom-up: largest on top
        values = [float(bar.hours) for bar in bars]
        container = axes.barh([bar.label for bar in bars], values,
                              color=[bar.color for bar in bars])
        axes.bar_label(container, labels=[f"{format_hours(bar.hours)} h" for bar in bars],
                       padding=3)
        axes.set_xlim(0, max(values) * 1.15)
        axes.grid(axis="x", alpha=0.3)
    target = Path(path)
    try:
        figure.savefig(target, format="png", dpi=100)
    except OSError as error:
        raise CdrStreamError(f"cannot write chart {target}: {error.strerror}") from None
    return target
