# syntax=docker/dockerfile:1
#
# Wombat: the daemon (wombat-server) and the reference backend
# (wombat-mc-lite) in one small image. docs/OPERATIONS.md ("Containers")
# explains the layout, the volumes and how this file was verified.
#
#   docker build -t wombat .
#   docker run --rm -p 8081:8081 -e LLM_PROVIDER=echo wombat
#
# Build stage: the toolchain image; the workspace's Cargo.lock is honoured.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# Debug info stripped (symbols kept): the binaries shrink about fivefold.
# Whole-program LTO in one codegen unit for the image: 6 % fewer instructions
# per send and less CPU per send (docs/BENCHMARKS.md, item 15), for about two
# more minutes of build on 2 cores. Left out of the workspace's release
# profile, where it would slow every local rebuild to ~5 minutes.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    CARGO_PROFILE_RELEASE_LTO=fat \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p wombat-server -p wombat-mc-lite-bin \
    && install -D -m 0755 target/release/wombat-server target/release/wombat-mc-lite -t /out/

# Runtime stage: Debian slim (glibc, bash for the health check), no compiler,
# no package manager run. TLS roots are compiled into the binaries (rustls
# with webpki-roots), so no ca-certificates package is needed.
FROM debian:bookworm-slim AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" wombat \
    && useradd --system --uid "${UID}" --gid wombat --home-dir /var/lib/wombat \
       --shell /usr/sbin/nologin wombat \
    && install -d -o wombat -g wombat -m 0750 /var/lib/wombat /var/lib/wombat/state /var/lib/wombat/data
COPY --from=build /out/ /usr/local/bin/
# The bundled example workspace; mount your own over it (read-only is fine:
# the boot marker goes to WOMBAT_STATE_DIR).
COPY workspace-examples/default /srv/wombat/workspace
ENV WOMBAT_HOST=0.0.0.0 \
    WOMBAT_PORT=8081 \
    WOMBAT_WORKSPACE=/srv/wombat/workspace \
    WOMBAT_STATE_DIR=/var/lib/wombat/state \
    WOMBAT_DATA_DIR=/var/lib/wombat/data \
    WOMBAT_LOG_FORMAT=json
USER wombat:wombat
WORKDIR /var/lib/wombat
VOLUME ["/var/lib/wombat"]
EXPOSE 8081
# No curl in the image: bash's /dev/tcp sends one HTTP/1.0 request and the
# check passes on a 200 status line. /health needs no daemon key.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${WOMBAT_PORT:-8081} && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && IFS= read -r -t 4 status <&3 && [[ $status == *' 200 '* ]]"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["wombat-server"]
