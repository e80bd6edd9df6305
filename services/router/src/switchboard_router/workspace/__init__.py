"""The agent's workspace on the router's HTTP API (issue 15): one module per concern.
See ``services/router/README.md`` ("Complete timeline")."""
