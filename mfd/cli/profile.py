"""`mfd profile check PATH` prints the rule table a profile derives; `mfd profile list` the shipped profiles.

The check loads the file given (`mfd.profiles.load`), never the active profile: it works whatever
`MFD_PROFILE` says, and imports nothing bound to the active profile (`mfd.schema`, `mfd.validation`).
A profile that cannot run is a ProfileError: one line on stderr, exit status 2 (`mfd.cli.main`).
"""

from __future__ import annotations

import argparse

from tabulate import tabulate

from mfd.profiles import (
    LABEL,
    MACHINE,
    NO_SEGMENT,
    SEGMENT,
    SHIPPED_DIR,
    TIMESTAMP,
    Profile,
    load,
    resolve,
    shipped_names,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="check a plant profile (print its rule table) or list the shipped profiles",
        description="A plant profile (YAML) declares a plant's readings; see docs/profiles.md.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="load a profile and print the rule table it derives (exit 2 with one line if it cannot run)",
        description="Load the profile at PATH (or a shipped profile's name) and print its columns, rules, "
        "derived features and settings. Exit 0 when it can run; else one line naming the key, exit 2.",
    )
    check.add_argument("path", metavar="PATH", help="a profile YAML file, or a shipped name (ai4i, cmapss)")
    check.set_defaults(func=run_check)
    listing = actions.add_parser("list", help="list the profiles shipped with mfd")
    listing.set_defaults(func=run_list)


def _number(value: float) -> str:
    return f"{value:g}"


def column_rows(profile: Profile) -> list[list[str]]:
    """One row per column a reading carries: source, canonical, kind, unit, min, max, allowed, nullable."""
    rows = [
        [profile.machine_column, MACHINE, "key (text)", "", "", "", "", "no"],
        [profile.timestamp_column, TIMESTAMP, "key (time, UTC)", "", "", "", "", "no"],
    ]
    if profile.segment_column:
        allowed = ", ".join(profile.segments)
        rows.append([profile.segment_column, SEGMENT, "segment", "", "", "", allowed, "no"])
    else:
        rows.append(["(none)", SEGMENT, "segment", "", "", "", f"{NO_SEGMENT} (fixed)", "no"])
    for sensor in profile.sensors:
        rows.append(
            [
                sensor.name,
                sensor.name,
                "sensor",
                sensor.unit,
                _number(sensor.min),
                _number(sensor.max),
                "",
                "no",
            ]
        )
    if profile.label_column:
        rows.append([profile.label_column, LABEL, "label (flag)", "", "", "", "0, 1", "yes"])
    for mode in profile.failure_modes:
        rows.append([mode, mode, "failure mode (flag)", "", "", "", "0, 1", "yes"])
    return rows


def derived_rows(profile: Profile) -> list[list[str]]:
    return [[d.name, d.expression.text, d.unit, ", ".join(d.expression.names)] for d in profile.derived]


def peripheral_rows(profile: Profile) -> list[list[str]]:
    return [[s.name, s.unit, _number(s.min), _number(s.max)] for s in profile.peripheral]


def label_source(profile: Profile) -> str:
    sources = []
    if profile.label_column:
        sources.append(f"column {profile.label_column} -> {LABEL}")
    if profile.failure_records:
        modes = f" (modes: {', '.join(profile.failure_modes)})" if profile.failure_modes else ""
        sources.append(f"{profile.failure_records} records under incoming/maintenance/{modes}")
    return "; ".join(sources)


def settings_rows(profile: Profile) -> list[list[str]]:
    hours = profile.horizon.total_seconds() / 3600
    shipped = resolve(profile.path).parent == SHIPPED_DIR
    where = f"shipped: mfd/profiles/{profile.path}.yaml" if shipped else profile.path
    return [
        ["profile", profile.stamp()],
        ["description", profile.description],
        ["file", where],
        ["label", label_source(profile)],
        ["horizon", f"{hours:g} h"],
        ["windows", ", ".join(map(str, profile.windows)) + " readings"],
        ["generator", profile.generator],
    ]


def render(profile: Profile) -> str:
    """The rule table a profile derives, as text tables."""
    parts = [
        tabulate(settings_rows(profile), tablefmt="plain"),
        "",
        "columns",
        tabulate(
            column_rows(profile),
            headers=["source", "canonical", "kind", "unit", "min", "max", "allowed", "nullable"],
            tablefmt="simple",
            disable_numparse=True,
        ),
    ]
    if profile.derived:
        parts += [
            "",
            "derived features",
            tabulate(
                derived_rows(profile),
                headers=["name", "expression", "unit", "uses"],
                tablefmt="simple",
                disable_numparse=True,
            ),
        ]
    if profile.costs:
        kinds = list(next(iter(profile.costs.values())))
        rows = [[segment, *(_number(costs[k]) for k in kinds)] for segment, costs in profile.costs.items()]
        parts += [
            "",
            "alarm costs per segment (one currency unit per event)",
            tabulate(rows, headers=["segment", *kinds], tablefmt="simple", disable_numparse=True),
        ]
    if profile.peripheral:
        parts += [
            "",
            "peripheral devices (incoming/peripheral/)",
            tabulate(
                peripheral_rows(profile),
                headers=["name", "unit", "min", "max"],
                tablefmt="simple",
                disable_numparse=True,
            ),
        ]
    return "\n".join(parts)


def run_check(args: argparse.Namespace) -> int:
    print(render(load(args.path)))
    return 0


def run_list(args: argparse.Namespace) -> int:
    rows = []
    for name in shipped_names():
        profile = load(name)
        rows.append([name, len(profile.sensors), profile.stamp(), profile.description])
    print(tabulate(rows, headers=["name", "sensors", "stamp", "description"], tablefmt="simple"))
    return 0
