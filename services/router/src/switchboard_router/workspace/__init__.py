"""The agent's workspace on the router's HTTP API: what helpdesk frontends and the
reference console read and do, one module per concern (see ``services/router/README.md``)."""
