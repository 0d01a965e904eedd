"""Serving the champion: request validation, API-key and body-size guards, champion loading and reload.

In: HTTP readings (validated by the rule table in `mfd.validation`) and the champion through the one loader
in `mfd.registry.champion`. Out: probability, label, threshold and model version per reading; the bento
(`packaging`) and the generated `bento/bentofile.yaml`. Pure Python (no BentoML service code, no Dagster):
`bento/service.py` wires these into the service.
"""
