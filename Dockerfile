# syntax=docker/dockerfile:1
# The novads image: one static-enough binary on a distroless base (glibc, CA certificates, no
# shell, no package manager), running as the unprivileged user 65532 with a read-only root
# file system. Build: docker build -t novads/novads:0.1.0 .   (docs/install.md)

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Everything the workspace needs to build; .dockerignore keeps target/ and local state out.
COPY . .
# The caches keep the registry and the build directory between builds of the same machine.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin novads \
    && install -D -m 0755 target/release/novads /out/novads

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="novads" \
      org.opencontainers.image.description="The open control plane for shared municipal hosting" \
      org.opencontainers.image.licenses="EUPL-1.2" \
      org.opencontainers.image.source="https://github.com/novads/novads"
COPY --from=build /out/novads /usr/local/bin/novads
# nonroot (65532:65532), as the chart's securityContext also requires.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/novads"]
CMD ["--help"]
