# rbdx: the commands the README documents.
.PHONY: all build test demo bench package clean

all: build

build:
	cargo build --release

## Lint, unit and cluster tests (starts and stops a local test cluster).
test:
	tests/run

## .deb and .rpm packages into target/packages/.
package:
	packaging/build

## Benchmarks against the stock drivers' CLI sequences and bare librbd (docs/bench/).
bench:
	tests/bench

## A walk-through on a throwaway local cluster.
demo:
	tests/demo

clean:
	cargo clean
