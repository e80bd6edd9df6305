"""The agent workspace: what helpdesk frontends and the reference console read and do."""
