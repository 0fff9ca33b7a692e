# Millwright's benchmark suite: builds the server, runs every benchmark against it and its
# peers (Mosquitto, VictoriaMetrics) on this machine — about 15 minutes on 2 cores — and writes
# the results into docs/benchmarks.md. Tests are ./scripts/test.
.PHONY: bench bench-quick

bench:
	go run ./bench/suite -out docs/benchmarks.md

# Small fleets and short windows, to check the harness; prints instead of writing the docs.
bench-quick:
	go run ./bench/suite -quick
