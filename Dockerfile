# mychat: a small, non-root image with the one binary (multi-stage: the Rust toolchain stays in
# the build stage; the runtime is debian-slim + ca-certificates + mychat, uid/gid 10001).
#   docker build -t mychat:latest .      (.dockerignore keeps target/, .tools/, secrets/ out)
# Migrations and nats.conf are compiled into the binary; the image needs no other file.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mychat && strip target/release/mychat

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 mychat \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mychat --create-home mychat
COPY --from=build /src/target/release/mychat /usr/local/bin/mychat
USER 10001:10001
WORKDIR /var/lib/mychat
ENV MYCHAT_DATA_DIR=/var/lib/mychat MYCHAT_LOG_FORMAT=json
EXPOSE 8080 8081 8082
ENTRYPOINT ["mychat"]
CMD ["serve", "all"]
