"""pytest support: the plugin with the server fixtures, a topic probe and event builders."""
