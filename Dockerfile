# gsdr image: a static-ish Rust binary on Debian slim with the client tools
# the engines run (pg_basebackup/pg_dump for PostgreSQL, redis-server for RDB
# restores), as a non-root user with a read-only root filesystem in mind.

# The toolchain the project is built and tested with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin gsdr && strip target/release/gsdr

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client-15 redis-server tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 gsdr && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin gsdr
COPY --from=build /src/target/release/gsdr /usr/local/bin/gsdr
COPY policies /usr/share/gsdr/policies
USER 65532:65532
ENV GSDR_POLICY=/etc/gsdr/policy.toml
EXPOSE 9464
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/gsdr"]
CMD ["daemon"]
