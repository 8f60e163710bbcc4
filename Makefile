# rbdx: the commands the README documents. Each starts by installing what the
# machine lacks (tests/deps: Debian packages as root, else the exact apt-get
# line to run; clippy and rustfmt through rustup).
.PHONY: all build test demo bench package deps clean

all: build

build:
	cargo build --release

## Lint, unit and cluster tests (starts and stops a local test cluster).
test:
	tests/deps test
	tests/run

## .deb and .rpm packages into target/packages/.
package:
	packaging/build

## Benchmarks against the stock drivers' CLI sequences and bare librbd (docs/bench/).
bench:
	tests/deps bench
	tests/bench

## A walk-through on a throwaway local cluster.
demo:
	tests/deps demo
	tests/demo

## Only the dependency step of `make test`.
deps:
	tests/deps test

clean:
	cargo clean
