# rbdx: the commands the README documents.
.PHONY: all build test demo clean

all: build

build:
	cargo build --release

## Lint, unit and cluster tests (starts and stops a local test cluster).
test:
	tests/run

## A walk-through on a throwaway local cluster.
demo:
	tests/demo

clean:
	cargo clean
