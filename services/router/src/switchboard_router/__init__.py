"""Switchboard router: identity → timeline → assignment."""
