"""Readings over MQTT (`mfd stream`): payloads checked by the profile's rule table (`payloads`), each
micro-batch stored and scored in one transaction (`store`), messages acknowledged after the commit
(`consumer`)."""
