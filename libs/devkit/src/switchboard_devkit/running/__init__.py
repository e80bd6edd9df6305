"""Running the services as real processes: the `make run` supervisor and the test stacks."""
