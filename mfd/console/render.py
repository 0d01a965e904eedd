"""The console's HTML, rendered on the server: the page shell, and the fragments (summary, alarm rows,
fleet rows) that the page's few lines of JS fetch every few seconds and swap in. Sparklines are inline SVG."""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta
from typing import Any

from mfd.alarms.model import OUTCOMES, SEVERITY_NAMES
from mfd.console.data import Figures

DASH = "—"


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return DASH
    seconds = max((now - then).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def sparkline(points: list[list[float]], threshold: float | None, width: int = 140, height: int = 28) -> str:
    """An inline SVG of risk (0..1) over time (at most `width` / 4 points), the threshold dashed."""
    if not points:
        return f'<svg class="spark" width="{width}" height="{height}"></svg>'
    step = max(1, -(-len(points) // max(width // 4, 2)))
    shown = points[::-1][::step][::-1]  # every step-th point, keeping the newest
    t0, t1 = shown[0][0], shown[-1][0]
    span = (t1 - t0) or 1.0
    x_scale, y_scale = (width - 2) / span, height - 4

    def y(v: float) -> int:
        return round(height - 2 - v * y_scale)

    coords = " ".join(f"{round((t - t0) * x_scale) + 1},{y(v)}" for t, v in shown)
    line = (
        f'<line x1="0" x2="{width}" y1="{y(threshold)}" y2="{y(threshold)}" class="thr"/>'
        if threshold is not None
        else ""
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="risk trend">{line}<polyline points="{coords}"/></svg>'
    )


_SPARKS: dict[tuple[str, int, float | None], str] = {}  # a machine's sparkline until its next reading
_SPARKS_MAX = 50_000


def machine_sparkline(machine: dict[str, Any]) -> str:
    """The machine's trend as SVG, rendered once per (machine, last reading, threshold)."""
    key = (machine["machine_id"], machine["last_reading_id"], machine["threshold"])
    svg = _SPARKS.get(key)
    if svg is None:
        if len(_SPARKS) >= _SPARKS_MAX:
            _SPARKS.clear()
        svg = _SPARKS[key] = sparkline(json.loads(machine["trend"]), machine["threshold"])
    return svg


def _why(alarm: dict[str, Any]) -> str:
    parts = [
        f"{html.escape(str(f['feature']))} {float(f.get('attribution', 0)):+.2f}"
        for f in alarm["top_features"][:3]
    ]
    text = "top features: " + (", ".join(parts) if parts else "not explained")
    rule = alarm["nearest_rule"]
    if rule:
        state = "fires" if rule.get("fires") else "near"
        text += (
            f"<br>nearest rule: {html.escape(str(rule.get('rule')))} {state} "
            f"(margin {float(rule.get('margin', 0)):+.1%})"
        )
    return text


def _actions(alarm: dict[str, Any]) -> str:
    i = alarm["id"]
    outcomes = "".join(f'<option value="{o}">{o.replace("_", " ")}</option>' for o in OUTCOMES)
    ack = (
        f'<button data-action="acknowledge" data-alarm="{i}">Acknowledge</button>'
        if alarm["state"] != "acknowledged"
        else ""
    )
    snooze = (
        f'<button data-action="snooze" data-alarm="{i}">Snooze 1 h</button>'
        if alarm["state"] != "snoozed"
        else ""
    )
    return (
        f"{ack}{snooze}"
        f'<select id="outcome-{i}" aria-label="outcome of alarm {i}"><option value="">outcome…</option>{outcomes}</select>'
        f'<button data-action="resolve" data-alarm="{i}">Resolve</button>'
    )


def alarm_rows(alarms: list[dict[str, Any]], now: datetime) -> str:
    if not alarms:
        return '<tr><td colspan="8" class="empty">no unresolved alarms</td></tr>'
    rows = []
    for a in alarms:
        sev = SEVERITY_NAMES.get(int(a["severity"]), str(a["severity"]))
        state = a["state"] + (f" until {a['snoozed_until']:%H:%M} UTC" if a["snoozed_until"] else "")
        who = f" by {html.escape(a['acknowledged_by'])}" if a["acknowledged_by"] else ""
        rows.append(
            f'<tr class="alarm sev-{sev}" data-alarm="{a["id"]}" data-machine="{html.escape(a["machine_id"])}" '
            f'data-state="{a["state"]}">'
            f'<td><span class="sev">{sev}</span></td>'
            f'<td><a href="alarms/{a["id"]}" title="risk around the alarm">{html.escape(a["machine_id"])}</a></td>'
            f'<td class="state">{state}{who}{" · escalated" if a["escalated_at"] else ""}</td>'
            f"<td>{a['count']}</td><td>{a['peak_risk']:.2f}</td><td>{ago(a['opened_at'], now)}</td>"
            f'<td class="why">{_why(a)}</td><td class="actions">{_actions(a)}</td></tr>'
        )
    return "".join(rows)


def fleet_rows(machines: list[dict[str, Any]], now: datetime) -> str:
    if not machines:
        return '<tr><td colspan="8" class="empty">no scored readings yet</td></tr>'
    rows = []
    for m in machines:
        rul = DASH if m["rul_estimate"] is None else f"{m['rul_estimate']:.1f} h"
        status = "stale" if m["stale"] else (m["alarm_state"] or "ok")
        threshold = DASH if m["threshold"] is None else f"{m['threshold']:.2f}"
        rows.append(
            f'<tr class="machine {"stale" if m["stale"] else ""}" data-machine="{html.escape(m["machine_id"])}" '
            f'data-risk="{m["risk"]:.4f}"><td>{html.escape(m["machine_id"])}</td>'
            f"<td>{html.escape(m['machine_type'] or DASH)}</td><td class='risk'>{m['risk']:.2f}</td>"
            f"<td>{threshold}</td><td>{machine_sparkline(m)}</td><td>{rul}</td>"
            f'<td class="status">{status}</td><td>{ago(m["last_timestamp"], now)}</td></tr>'
        )
    return "".join(rows)


def summary(f: Figures, stale_after: timedelta, now: datetime) -> str:
    states = ", ".join(f"{n} {s}" for s, n in f.alarms_by_state.items())
    return (
        f"{f.machines} machines ({f.machines_stale} silent over {stale_after.total_seconds() / 60:.0f} min) · "
        f"alarms: {states} · detection lag {f.detection_lag_s:.0f} s · "
        f"{f.readings_last_minute} readings in the last minute · updated {now:%H:%M:%S} UTC"
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:1.5rem}
td,th{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
.sev-critical .sev{background:#b00020;color:#fff;padding:0 .3rem}.sev-high .sev{background:#e65100;color:#fff;padding:0 .3rem}
.sev-warning .sev{background:#f9a825;padding:0 .3rem}
tr.stale{color:#888;font-style:italic}.spark polyline{fill:none;stroke:#1565c0;stroke-width:1.5}
.spark .thr{stroke:#b00020;stroke-dasharray:3 2}#message{min-height:1.2rem;color:#1565c0}
.empty{color:#888}header input{margin-right:1rem}
"""

SCRIPT = """
const every = Number(document.body.dataset.poll) * 1000;
const $ = (id) => document.getElementById(id);
function key() { return $('api-key').value; }
$('api-key').value = localStorage.getItem('mfd-key') || '';
$('actor').value = localStorage.getItem('mfd-actor') || '';
$('api-key').addEventListener('input', (e) => localStorage.setItem('mfd-key', e.target.value));
$('actor').addEventListener('input', (e) => localStorage.setItem('mfd-actor', e.target.value));
async function refresh() {
  try {
    const r = await fetch('api/fragments', {cache: 'no-store'});
    if (!r.ok) return;
    const f = await r.json();
    $('summary').innerHTML = f.summary; $('alarm-rows').innerHTML = f.alarms; $('fleet-rows').innerHTML = f.fleet;
    document.body.dataset.updated = f.generated_at;
  } catch (e) { /* the next poll tries again */ }
}
document.addEventListener('click', async (e) => {
  const b = e.target.closest('button[data-action]'); if (!b) return;
  const id = b.dataset.alarm, action = b.dataset.action;
  const body = {actor: $('actor').value};
  if (action === 'snooze') body.until = new Date(Date.now() + 3600e3).toISOString();
  if (action === 'resolve') body.outcome = $('outcome-' + id).value || null;
  const headers = {'content-type': 'application/json'};
  if (key()) headers.authorization = 'Bearer ' + key();
  const r = await fetch('alarms/' + id + '/' + action, {method: 'POST', headers, body: JSON.stringify(body)});
  const answer = await r.json().catch(() => ({}));
  $('message').textContent = r.ok ? `alarm ${id}: ${answer.state}` : `alarm ${id}: ${r.status} ${answer.error || ''}`;
  $('message').dataset.status = r.status;
  refresh();
});
setInterval(refresh, every);
"""


def page(title: str, fragments: dict[str, str], poll_s: float) -> str:
    """The whole page, its tables filled with the current fragments."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body data-poll="{poll_s}" data-updated="{fragments["generated_at"]}">
<header><h1>{html.escape(title)}</h1><p id="summary">{fragments["summary"]}</p>
<label>Your name <input id="actor" autocomplete="name"></label>
<label>API key <input id="api-key" type="password" autocomplete="off"></label><span id="message"></span></header>
<h2>Alarms</h2><table id="alarms"><thead><tr><th>severity</th><th>machine</th><th>state</th><th>count</th>
<th>peak risk</th><th>opened</th><th>why</th><th>actions</th></tr></thead>
<tbody id="alarm-rows">{fragments["alarms"]}</tbody></table>
<h2>Fleet by risk</h2><table id="fleet"><thead><tr><th>machine</th><th>type</th><th>risk</th><th>threshold</th>
<th>trend</th><th>time to failure</th><th>status</th><th>last reading</th></tr></thead>
<tbody id="fleet-rows">{fragments["fleet"]}</tbody></table>
<script>{SCRIPT}</script></body></html>"""
