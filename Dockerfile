# syntax=docker/dockerfile:1
#
# `platform` as a static musl binary in a minimal non-root image: the daemon
# for deploy/kubernetes and, as DEMO_IMAGE, the built-in `demo` trainer.
#
#   docker build -t registry.example/platform:0.1.0 .
#
# Build stage: Debian's musl-tools gives the C compiler that SQLite
# (rusqlite "bundled") and aws-lc-sys need; no cmake, clang or OpenSSL.
# It builds for the architecture it runs on (buildx: --platform linux/amd64
# or linux/arm64).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && rustup target add "$target" \
 && cargo build --locked --release --target "$target" \
 && install -D -m 0755 "target/$target/release/platform" /out/platform \
 && mkdir -p /out/data

# Runtime: distroless "static" has CA certificates, tzdata and a nonroot user
# (65532), and nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/platform /usr/local/bin/platform
# The data directory (database, local object store), writable by the user;
# mount a volume here (deploy/kubernetes mounts its PersistentVolumeClaim).
COPY --from=build --chown=65532:65532 /out/data /var/lib/platform
ENV PLATFORM_DATA_DIR=/var/lib/platform
USER 65532:65532
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/platform"]
CMD ["serve", "--bind", "0.0.0.0:8000"]
