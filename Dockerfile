# Weir in a container: `docker build -t weir .` then
#   docker run -d --name weir -p 9092:9092 -p 9644:9644 -v weir-data:/var/lib/weir \
#     -e WEIR_ADVERTISED_LISTEN=<host clients dial>:9092 weir
# Stop with `docker stop -t 120 weir`: SIGTERM starts a controlled shutdown
# (leadership moves away, in-flight requests finish, logs are flushed).
# See README, "Operating Weir".

# Build stage: the release binary. No librdkafka is compiled (the bench driver is
# behind the rdkafka-driver feature); zstd needs the C compiler the image has.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p weir \
    && install -m 0755 target/release/weir /usr/local/bin/weir

# Runtime stage: the binary alone on a slim base, run as an unprivileged user.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 weir \
    && useradd --system --uid 10001 --gid weir --home-dir /var/lib/weir --shell /usr/sbin/nologin weir \
    && mkdir -p /var/lib/weir \
    && chown weir:weir /var/lib/weir
COPY --from=build /usr/local/bin/weir /usr/local/bin/weir
USER weir:weir
# Every setting is also a WEIR_<KEY> variable (see `weir serve --help`); these make the
# broker reachable from outside the container. Set WEIR_ADVERTISED_LISTEN to the address
# clients use, or they will be told 127.0.0.1.
ENV WEIR_DATA_DIR=/var/lib/weir \
    WEIR_LISTEN=0.0.0.0:9092 \
    WEIR_HTTP_LISTEN=0.0.0.0:9644 \
    WEIR_LOG_FORMAT=json
VOLUME ["/var/lib/weir"]
# 9092: Kafka protocol. 9644: /metrics, /health/*, the read-only admin API (/v1/).
EXPOSE 9092 9644
STOPSIGNAL SIGTERM
# Ready = logs recovered, registered and unfenced, caught up on metadata. bash's
# /dev/tcp speaks the HTTP request, so the image needs no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9644 && printf 'GET /health/ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["serve"]
