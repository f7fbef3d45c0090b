"""Every setting a process reads from its environment or a file, and the secrets a spec
names: the bottom layer beside `models`, imported by every other one and importing nothing
of ours but `models` (the layers contract in pyproject.toml holds it there). Of the outside
it needs only the standard library, and pyyaml for the codec keys file, as models does for
specs: a node agent or a CLI call loads it whole for almost nothing."""
