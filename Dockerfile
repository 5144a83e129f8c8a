# The hookmesh image: the `hookmesh` binary and the filter module the sidecars' init container
# copies (k8s/deploy/sidecar). Build from the repository root:
#   docker build -t <registry>/hookmesh:0.1.0 .
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip1
COPY . .
RUN cargo build --locked --release -p hookmesh \
 && cargo build --locked --profile wasm --target wasm32-wasip1 -p hookmesh-filter

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/hookmesh /usr/local/bin/hookmesh
COPY --from=build /src/target/wasm32-wasip1/wasm/hookmesh_filter.wasm /usr/share/hookmesh/hookmesh_filter.wasm
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/hookmesh"]
