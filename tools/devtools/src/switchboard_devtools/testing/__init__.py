"""Test support for each service: builders, signed provider payloads, in-process and
process-level harnesses. Kept out of the services' shipped packages."""
