"""What-if replays: recorded traffic through the router's own assignment engine on a
simulated clock, once with the current routing policy and once with a candidate, and a
report of what would have changed (``switchboard simulate``; services/router/README.md,
"What-if replays").

Pure core: ``trace`` (reading records), ``handling`` (agents' work), ``replay`` (the
engine driven by simulated time), ``report`` (the numbers), ``render``/``page`` (text and
HTML). Shell: ``export`` (Kafka) and ``cli``.
"""
