"""The console's HTML, rendered on the server: the page shell, and the fragments (summary, alarm rows,
fleet rows) that the page's few lines of JS fetch every few seconds and swap in. A fleet row carries its
machine's trend as numbers (`data-trend`, the JSON machine_risk keeps) and the page's script draws the
sparklines; the alarm page's risk plot is an SVG drawn here (`sparkline`)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mfd.alarms.model import OUTCOMES, SEVERITY_NAMES
from mfd.console.data import Figures

DASH = "—"


def sparkline(points: list[list[float]], threshold: float | None, width: int = 140, height: int = 28) -> str:
    """An inline SVG of risk (0..1) over time (at most `width` / 4 points), the threshold dashed (the alarm
    page's plot; the page's script draws the fleet's sparklines the same way, `SCRIPT`'s `spark`)."""
    if not len(points):
        return f'<svg class="spark" width="{width}" height="{height}"></svg>'
    step = max(1, -(-len(points) // max(width // 4, 2)))
    shown = points[::-1][::step][::-1]  # every step-th point, keeping the newest
    t0 = shown[0][0]
    sx, sy, base = (width - 2) / ((shown[-1][0] - t0) or 1.0), height - 4, height - 2
    coords = " ".join(
        f"{round((t - t0) * sx) + 1},{round(base - min(max(v, 0.0), 1.0) * sy)}" for t, v in shown
    )
    line = ""
    if threshold is not None:
        y_thr = round(base - min(max(threshold, 0.0), 1.0) * sy)
        line = f'<line x1="0" x2="{width}" y1="{y_thr}" y2="{y_thr}" class="thr"/>'
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="risk trend">{line}<polyline points="{coords}"/></svg>'
    )


class RowCache:
    """Rendered HTML by key, bounded: a row is rendered again only when what it shows changed."""

    def __init__(self, limit: int = 50_000) -> None:
        self.rows: dict[tuple, str] = {}
        self.limit = limit

    def get(self, key: tuple, make: Callable[[], str]) -> str:
        html_text = self.rows.get(key)
        if html_text is None:
            if len(self.rows) >= self.limit:
                self.rows.clear()
            html_text = self.rows[key] = make()
        return html_text


@dataclass
class Caches:
    """One app's trends and rendered rows (per app: keys are only unique within one database)."""

    # machine -> (last reading id, trend JSON): each machine's trend as of its last reading taken; the
    # machines of the last fleet read only (replaced whole)
    trends: dict[str, tuple[int, str]] = field(default_factory=dict)
    fleet: RowCache = field(default_factory=RowCache)
    alarms: RowCache = field(default_factory=RowCache)
    why: RowCache = field(default_factory=RowCache)  # an alarm's "why" changes only at a new peak
    # (store version, {"alarms": ..., "fleet": ..., "tables": token}): the tables as last rendered, reused
    # while the store's version (`mfd.console.data.version`) is unchanged; one tuple, replaced whole
    tables: tuple[tuple, dict[str, str]] | None = None
    rendered: int = 0  # how many times the tables were rendered (the token's serial)

    def trends_after(self) -> int | None:
        """The highest last reading id whose trend is kept (None when none is): a machine whose last
        reading id is above it has a trend not seen yet."""
        return max((last for last, _ in self.trends.values()), default=None)


def keep_trends(machines: list[dict[str, Any]], caches: Caches) -> list[str]:
    """Keep each machine's trend for its last reading: the one the fleet read returned (`trend`, when it
    changed), else the kept one if still for that reading; machines gone from the fleet dropped. Returns
    the machines whose trend is unknown (their last reading id moved without passing the cursor)."""
    kept: dict[str, tuple[int, str]] = {}
    missing = []
    for m in machines:
        name, last = m["machine_id"], m["last_reading_id"]
        seen = caches.trends.get(name)
        if m["trend"] is not None:
            kept[name] = (last, m["trend"])
        elif seen is not None and seen[0] == last:
            kept[name] = seen
        else:
            missing.append(name)
    caches.trends = kept
    return missing


def when(value: datetime | None) -> str:
    """A UTC time the page's script turns into "... ago" (the row's HTML stays the same as time passes)."""
    if value is None:
        return DASH
    iso = value.isoformat()  # cheaper than strftime, a thousand times a render
    return f'<time datetime="{iso}">{iso[:10]} {iso[11:19]} UTC</time>'


def _why(alarm: dict[str, Any]) -> str:
    """Top features (from the alarm's peak event) and the nearest physics rule, from their JSON."""
    features = json.loads(alarm["top_features"]) if alarm["top_features"] else []
    parts = [f"{html.escape(str(f['feature']))} {float(f.get('attribution', 0)):+.2f}" for f in features[:3]]
    text = "top features: " + (", ".join(parts) if parts else "not explained")
    rule = json.loads(alarm["nearest_rule"]) if alarm["nearest_rule"] else None
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


def _alarm_row(a: dict[str, Any], caches: Caches) -> str:
    sev = SEVERITY_NAMES.get(int(a["severity"]), str(a["severity"]))
    state = a["state"] + (f" until {a['snoozed_until']:%H:%M} UTC" if a["snoozed_until"] else "")
    who = f" by {html.escape(a['acknowledged_by'])}" if a["acknowledged_by"] else ""
    why = caches.why.get((a["top_features"], a["nearest_rule"]), lambda: _why(a))
    return (
        f'<tr class="alarm sev-{sev}" data-alarm="{a["id"]}" data-machine="{html.escape(a["machine_id"])}" '
        f'data-state="{a["state"]}">'
        f'<td><span class="sev">{sev}</span></td>'
        f'<td><a href="alarms/{a["id"]}" title="risk around the alarm">{html.escape(a["machine_id"])}</a></td>'
        f'<td class="state">{state}{who}{" · escalated" if a["escalated_at"] else ""}</td>'
        f"<td>{a['count']}</td><td>{a['peak_risk']:.2f}</td><td>{when(a['opened_at'])}</td>"
        f'<td class="why">{why}</td><td class="actions">{_actions(a)}</td></tr>'
    )


def alarm_rows(alarms: list[dict[str, Any]], caches: Caches) -> str:
    """The unresolved alarms' rows; each rendered again only when the alarm changed (updated_at)."""
    if not alarms:
        return '<tr><td colspan="8" class="empty">no unresolved alarms</td></tr>'
    return "".join(
        caches.alarms.get((a["id"], a["updated_at"]), lambda a=a: _alarm_row(a, caches)) for a in alarms
    )


def _fleet_row(m: dict[str, Any], trend: str) -> str:
    rul = DASH if m["rul_estimate"] is None else f"{m['rul_estimate']:.1f} h"  # the profile's unit: hours
    status = "stale" if m["stale"] else (m["alarm_state"] or "ok")
    threshold = DASH if m["threshold"] is None else f"{m['threshold']:.2f}"
    line = "" if m["threshold"] is None else f"{m['threshold']:.4f}"
    if "<" in trend or "&" in trend or '"' in trend:  # never in the numbers machine_risk keeps
        trend = html.escape(trend)
    spark = f'<td class="trend" data-trend="{trend}" data-threshold="{line}"></td>'
    return (
        f'<tr class="machine {"stale" if m["stale"] else ""}" data-machine="{html.escape(m["machine_id"])}" '
        f'data-risk="{m["risk"]:.4f}"><td>{html.escape(m["machine_id"])}</td>'
        f"<td>{html.escape(m['machine_type'] or DASH)}</td><td class='risk'>{m['risk']:.2f}</td>"
        f"<td class='rul'>{rul}</td><td>{threshold}</td>{spark}"
        f'<td class="status">{status}</td><td>{when(m["last_timestamp"])}</td></tr>'
    )


def fleet_rows(machines: list[dict[str, Any]], caches: Caches) -> str:
    """Every machine's row, its trend from `caches.trends` (see `keep_trends`); a row is rendered again
    only when what it shows changed (its trend changes with its last reading). The cache keeps this
    render's rows only."""
    if not machines:
        return '<tr><td colspan="8" class="empty">no scored readings yet</td></tr>'
    rendered, kept = caches.fleet.rows, {}
    for m in machines:
        name, last = m["machine_id"], m["last_reading_id"]
        key = (name, last, m["threshold"], m["alarm_state"], m["stale"], m["rul_estimate"], m["machine_type"])
        row = rendered.get(key)
        kept[key] = row if row is not None else _fleet_row(m, caches.trends.get(name, (last, "[]"))[1])
    caches.fleet.rows = kept
    return "".join(kept.values())


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
function spark(td, width = 140, height = 28) {
  // a machine's risk trend ([[epoch s, risk], ...]) as an SVG: at most width/4 points (every step-th,
  // keeping the newest), risk 0..1 bottom to top, the threshold dashed; as render.sparkline on the server
  let points = [];
  try { points = JSON.parse(td.dataset.trend.replace(/NaN/g, 'null')).filter((p) => p[1] !== null); } catch (e) {}
  const step = Math.max(1, Math.ceil(points.length / Math.max(Math.floor(width / 4), 2)));
  const shown = points.filter((_, i) => (points.length - 1 - i) % step === 0);
  const y = (v) => Math.round(height - 2 - Math.min(Math.max(v, 0), 1) * (height - 4));
  const t0 = shown.length ? shown[0][0] : 0;
  const sx = (width - 2) / ((shown.length ? shown[shown.length - 1][0] - t0 : 0) || 1);
  const coords = shown.map(([t, v]) => `${Math.round((t - t0) * sx) + 1},${y(v)}`).join(' ');
  const thr = td.dataset.threshold;
  const line = thr ? `<line x1="0" x2="${width}" y1="${y(Number(thr))}" y2="${y(Number(thr))}" class="thr"/>` : '';
  td.innerHTML = `<svg class="spark" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" `
    + `role="img" aria-label="risk trend">${line}<polyline points="${coords}"/></svg>`;
}
function sparks() { for (const td of $('fleet-rows').querySelectorAll('td.trend')) spark(td); }
let tables = document.body.dataset.tables;
async function refresh() {
  try {
    const r = await fetch('api/fragments?tables=' + encodeURIComponent(tables), {cache: 'no-store'});
    if (!r.ok) return;
    const f = await r.json();
    $('summary').innerHTML = f.summary;
    if (f.fleet !== undefined) {  // the tables changed since the ones shown (else the server leaves them out)
      const chosen = {};  // a technician's chosen outcomes survive the poll that redraws the rows
      for (const s of document.querySelectorAll('select[id^="outcome-"]')) if (s.value) chosen[s.id] = s.value;
      $('alarm-rows').innerHTML = f.alarms; $('fleet-rows').innerHTML = f.fleet; sparks();
      for (const [id, value] of Object.entries(chosen)) { const s = $(id); if (s) s.value = value; }
      tables = f.tables;
    }
    document.body.dataset.updated = f.generated_at; ages();
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
function ages() {
  const now = Date.now();
  for (const t of document.querySelectorAll('time[datetime]')) {
    const s = Math.max(0, (now - Date.parse(t.getAttribute('datetime'))) / 1000);
    t.textContent = s >= 86400 ? `${Math.round(s / 86400)} d ago` : s >= 3600 ? `${Math.round(s / 3600)} h ago`
      : s >= 60 ? `${Math.round(s / 60)} min ago` : `${Math.round(s)} s ago`;
  }
}
sparks(); ages();
setInterval(refresh, every);
"""


def page(title: str, fragments: dict[str, str], poll_s: float) -> str:
    """The whole page, its tables filled with the current fragments."""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body data-poll="{poll_s}" data-updated="{fragments["generated_at"]}"
data-tables="{fragments["tables"]}">
<header><h1>{html.escape(title)}</h1><p id="summary">{fragments["summary"]}</p>
<label>Your name <input id="actor" autocomplete="name"></label>
<label>API key <input id="api-key" type="password" autocomplete="off"></label><span id="message"></span></header>
<h2>Alarms</h2><table id="alarms"><thead><tr><th>severity</th><th>machine</th><th>state</th><th>count</th>
<th>peak risk</th><th>opened</th><th>why</th><th>actions</th></tr></thead>
<tbody id="alarm-rows">{fragments["alarms"]}</tbody></table>
<h2>Fleet by risk</h2><table id="fleet"><thead><tr><th>machine</th><th>type</th><th>risk</th>
<th>time to failure</th><th>threshold</th><th>trend</th><th>status</th><th>last reading</th></tr></thead>
<tbody id="fleet-rows">{fragments["fleet"]}</tbody></table>
<script>{SCRIPT}</script></body></html>"""
