"""Switchboard SLA monitor: SLA clocks in business time, at-risk and breach events, metrics."""
