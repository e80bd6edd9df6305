"""Development and test tooling for Switchboard (not shipped in service images).

It knows no service: servers (``servers``), running processes (``running``) and pytest
support (``testing``). Tooling that needs the services lives in ``switchboard_devtools``.
"""
