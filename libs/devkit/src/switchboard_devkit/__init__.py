"""Development and test tooling for Switchboard (not shipped in service images)."""
