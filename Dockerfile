# walstream and its example subscribers, on Debian 12 like scripts/deps.sh.
#   docker build -t walstream .                            the daemon (the last stage, the default)
#   docker build --target user-cache -t walstream-user-cache .
#   docker build --target orders-consumer -t walstream-orders-consumer .
# docker-compose.yml builds all three.

# ---------------------------------------------------------------- build: compilers and -dev packages
FROM debian:bookworm AS build
# The build tools and -dev packages of scripts/deps.sh (libgtest-dev included, so that a build with
# tests also works here); the servers and Python are not needed to compile.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libpq-dev libpqxx-dev libhiredis-dev libssl-dev libfmt-dev libcxxopts-dev rapidjson-dev libgtest-dev libcpp-httplib-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target walstream \
 && cmake -S examples/cpp_user_cache -B /build-example -DCMAKE_BUILD_TYPE=Release \
 && cmake --build /build-example -j"$(nproc)" \
 && strip /build/cdc/cli/walstream /build-example/user_cache_example

# ---------------------------------------------------------------- the C++ example: a cache of users
FROM debian:bookworm-slim AS user-cache
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libhiredis0.14 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build-example/user_cache_example /usr/local/bin/user_cache_example
USER nobody
ENTRYPOINT ["user_cache_example"]

# ---------------------------------------------------------------- the Python example: new orders
FROM debian:bookworm-slim AS orders-consumer
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-redis \
 && rm -rf /var/lib/apt/lists/*
COPY examples/python_orders/orders_consumer.py /usr/local/bin/orders_consumer.py
USER nobody
ENTRYPOINT ["python3", "-u", "/usr/local/bin/orders_consumer.py"]

# ---------------------------------------------------------------- walstream: runtime libraries only
FROM debian:bookworm-slim AS walstream
# ca-certificates: for sslmode=verify-full against a PostgreSQL with a public certificate.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpq5 libpqxx-6.4 libhiredis0.14 libfmt9 libcpp-httplib0.11 libssl3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/cdc/cli/walstream /usr/local/bin/walstream
# walstream keeps no state on disk (the slot and Redis hold it all): any unprivileged user will do.
USER nobody
# --metrics-listen :9464 serves /metrics, /healthz and /readyz there (off unless asked for).
EXPOSE 9464
ENTRYPOINT ["walstream"]
CMD ["run"]
