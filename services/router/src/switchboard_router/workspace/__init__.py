"""The agent workspace: what a browser console needs of the router (see
``services/router/README.md``, "Agent workspace")."""
