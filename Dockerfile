# Multi-stage build: the same `cargo build --release --locked` that CI runs.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
# No .git in the build context: pass the commit for --version, mta_stsd_build_info and
# /api/v1/status with --build-arg MTA_STSD_COMMIT=$(git rev-parse --short HEAD) (a trailing
# "-dirty", e.g. from `git describe --always --dirty`, marks uncommitted changes); without it
# the commit reads "unknown".
ARG MTA_STSD_COMMIT
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/mta-stsd --shell /usr/sbin/nologin mta-stsd \
 && mkdir -p /etc/mta-stsd/tenants /var/lib/mta-stsd \
 && chown mta-stsd:mta-stsd /var/lib/mta-stsd && chmod 0700 /var/lib/mta-stsd
COPY --from=build /src/target/release/mta-stsd /usr/local/bin/mta-stsd
# The licence and the notices of what the binary bundles travel with it.
COPY LICENSE NOTICE /usr/share/doc/mta-stsd/
COPY deploy/docker/mta-stsd.yaml /etc/mta-stsd/mta-stsd.yaml
COPY config/tenants/ /etc/mta-stsd/tenants/
USER mta-stsd
# Docker lets unprivileged processes bind ports below 1024 inside the container
# (net.ipv4.ip_unprivileged_port_start=0), so 443 needs no capability here.
EXPOSE 443 9180
# The binary asks its own admin listener (GET /readyz; exit 0 ready, 1 not), so the image needs
# no curl. The default server file binds the admin listener to 127.0.0.1 inside the container,
# which this check reaches; a server file of your own must keep an admin listener on port 9180
# (or override HEALTHCHECK).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["mta-stsd", "health", "--admin", "http://127.0.0.1:9180"]
VOLUME ["/etc/mta-stsd", "/var/lib/mta-stsd"]
ENTRYPOINT ["/usr/local/bin/mta-stsd"]
CMD ["serve", "--config", "/etc/mta-stsd"]
