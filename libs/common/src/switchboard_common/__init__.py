"""Switchboard's shared library: contract, settings, logging, clients. No business logic."""

__version__ = "0.1.0"
