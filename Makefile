# The two commands of README.md.  Both set up what is missing first (scripts/setup.sh).
.PHONY: demo test setup bench
setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python scripts/demo.py

test:
	bash scripts/test.sh

bench: setup
	.venv/bin/gantry bench
