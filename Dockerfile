# gsdr images (README "Container images"):
#   docker build -t gsdr .                      the daemon / `run --once` (default target)
#   docker build --target drill -t gsdr-drill . the drills CronJob (deploy/components/drills)
# Both: the Rust binary on Debian slim as a non-root user, for a read-only
# root filesystem.

# Bases pinned by exact version tag (docs/security.md "Supply chain"): the
# toolchain the project is built and tested with (rustc 1.95.0) and the
# Debian point release of the build machine (12.11). Pin by digest where the
# registry can be asked for it.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin gsdr && strip target/release/gsdr

# A redis-server that loads the sources' RDB version: Debian bookworm's
# redis-server is 7.0 (RDB 10) and refuses the RDB 11/12 files of Redis
# 7.2/7.4. The official image's build (Debian bookworm based, same libc and
# OpenSSL 3) reads RDB 12; REDIS_IMAGE must be at least the sources' version.
ARG REDIS_IMAGE=redis:7.4.6-bookworm
FROM ${REDIS_IMAGE} AS redis

# The daemon: client tools the engines run (pg_basebackup/pg_dump for
# PostgreSQL, redis-server for RDB restores into a chosen target).
FROM debian:12.11-slim AS daemon
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates postgresql-client-15 redis-server tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 gsdr && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin gsdr
COPY --from=build /src/target/release/gsdr /usr/local/bin/gsdr
COPY policies /usr/share/gsdr/policies
COPY runbooks /usr/share/gsdr/runbooks
USER 65532:65532
ENV GSDR_POLICY=/etc/gsdr/policy.toml
EXPOSE 9464
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/gsdr"]
CMD ["daemon"]

# The drills: scratch servers started in the pod. PostgreSQL 15 server
# binaries (initdb, postgres, pg_ctl: the sources' major version; a base
# backup restores only into the same major), found on PATH as the policy's
# sources set no `pg_bin`; a redis-server from REDIS_IMAGE (the sources'
# `redis_server` default, `redis-server` on PATH).
# Not included: mongod. MongoDB's server is not in Debian and its licence
# (SSPL) keeps it out of this image; a drill with a mongo source starts the
# command in the policy's `drills.mongo_scratch_argv`, so build an image
# FROM this target that adds mongod (e.g. `COPY --from=mongo:7.0
# /usr/bin/mongod /usr/bin/mongod`, plus its shared libraries) and name that
# image in the drills CronJob.
FROM daemon AS drill
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /usr/bin/redis-server /usr/bin/redis-check-rdb
COPY --from=redis /usr/local/bin/redis-server /usr/local/bin/redis-server
USER 65532:65532
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["drill", "--scheduled"]

# The default target stays the daemon.
FROM daemon
