"""What the tests and the benchmarks share: specs of the local clusters, waits on stored
events, worker processes, and the durability stage. Above every layer of the project, as
devstack and bench are; nothing of the project imports it, and it imports no test."""
