"""Serving the champion: request validation, API-key and body-size guards, champion loading and reload.

Pure Python (no BentoML service code, no Dagster): `bento/service.py` wires these into the service.
"""
