"""Switchboard web chat: the widget, its socket and the webchat channel's replies."""
