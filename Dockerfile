# syntax=docker/dockerfile:1
# gatehouse: a small, non-root image with only the binary.
#
#   docker build -t gatehouse .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/config.toml:/etc/gatehouse/config.toml:ro" \
#     -e GATEHOUSE_OIDC_CLIENT_SECRET -e GATEHOUSE_SESSION_KEYS gatehouse
#
# The config is mounted, never baked in. In a container set server.listen = "0.0.0.0:8080"
# (the default, 127.0.0.1, is unreachable from outside the container). Secrets come from the
# environment or from files (oidc.client_secret_file), see config.toml.

# --- build -------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, against placeholder sources, so this layer is reused until Cargo.toml
# or Cargo.lock change. Every target Cargo.toml names explicitly needs a file to exist.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && cargo build --release --locked --bin gatehouse \
 && rm -rf src benches

# The real sources. Touch the crate roots so cargo rebuilds them rather than trusting the
# placeholders' timestamps.
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin gatehouse \
 && install -D -m 0755 target/release/gatehouse /out/gatehouse

# --- run ---------------------------------------------------------------------------------------
# distroless/cc: glibc and libgcc (all the binary links; TLS is rustls, no OpenSSL), CA
# certificates, no shell and no package manager. The :nonroot tag runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
USER nonroot:nonroot
EXPOSE 8080
# No HEALTHCHECK: distroless has no shell or curl to run one. Point the orchestrator's probes
# at GET /healthz (liveness) and GET /readyz (readiness: provider metadata loaded, store up).
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["--config", "/etc/gatehouse/config.toml"]
