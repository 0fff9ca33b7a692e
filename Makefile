# Millwright's benchmark suite: builds the server, runs every benchmark against it and its
# peers (Mosquitto, VictoriaMetrics) on this machine — about 15 minutes on 2 cores — and writes
# the results into docs/benchmarks.md. Tests are ./scripts/test.
.PHONY: bench bench-quick release image

bench:
	go run ./bench/suite -out docs/benchmarks.md

# Small fleets and short windows, to check the harness; prints instead of writing the docs.
bench-quick:
	go run ./bench/suite -quick

# The release: static binaries of both programs for linux/amd64, arm/7, arm64 and riscv64,
# each with a CycloneDX SBOM, and SHA256SUMS, in dist/ (scripts/release; VERSION=1.2.3 to name
# it, PLATFORMS="linux/amd64" for fewer). docs/operations.md "Installing".
release:
	scripts/release

# The container image of both binaries (packaging/Containerfile) from the release in dist/:
# make release first. Needs buildah or podman.
image:
	scripts/image
