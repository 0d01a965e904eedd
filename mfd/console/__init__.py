"""The maintenance console: a live fleet page (every machine's risk and trend, sorted by risk; the alarm
list with its actions and the why of each alarm; stale machines) and Prometheus metrics, served by Starlette
(`mfd console`). Pages are rendered on the server; a few lines of vanilla JS poll a JSON endpoint."""
