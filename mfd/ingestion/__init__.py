"""Ingestion: CSV objects under `incoming/` checked, bulk-loaded and filed away.

In: an object key in the object store. Out: rows in the `readings` / `peripheral_readings` tables, the file
moved to `processed/` (or `rejected/` with a `.reason.json` beside it), and an `IngestReport` with the
counts; the sensor state (`incoming`) that decides which objects are new.

`load` runs one file: `layouts` (kind of file, rules, table) -> `blocks` (records, header rules) ->
`parsing` (Arrow / pandas) -> `rows` (row rules as masks) -> `bad_rows` (spooled) and `sink` (the bulk
writer); `expectations` is the raw_readings Great Expectations suite."""
