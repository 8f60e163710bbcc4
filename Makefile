# rbdx: the commands the README documents.
.PHONY: all build test demo package clean

all: build

build:
	cargo build --release

## Lint, unit and cluster tests (starts and stops a local test cluster).
test:
	tests/run

## .deb and .rpm packages into target/packages/.
package:
	packaging/build

## A walk-through on a throwaway local cluster.
demo:
	tests/demo

clean:
	cargo clean
