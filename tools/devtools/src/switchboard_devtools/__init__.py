"""Development tooling that needs the services: docs generation, the demo, the simulated
helpdesk frontend and customers, and the fault drivers (not shipped in service images)."""
