"""Every setting a process reads from its environment or a file, and the secrets a spec
names: the bottom layer beside `models`, imported by every other one and importing nothing
of ours but `models` (the layers contract in pyproject.toml holds it there)."""
