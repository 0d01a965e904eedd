"""Generator: a simulated fleet whose physics follow the AI4I 2020 facts (mfd/data/README.md).

In: a machine count, a start time, a seed. Out: reading frames (the `readings` layout plus failure modes),
peripheral-device frames, CSV bytes (optionally with injected defects) for `incoming/`."""
