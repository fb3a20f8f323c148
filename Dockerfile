# pyspire-server and pyspire-agent with every plugin of this repository, one image for both.
#   docker build -t pyspire .
#   docker run pyspire pyspire-server run -config /etc/pyspire/server.conf
# The wheels are built in a first stage, so the image holds no compiler and no source tree.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY core ./core
COPY plugins ./plugins
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres,mysql,statsd,dogstatsd,opentelemetry]" plugins/*/

FROM python:3.11-slim
RUN groupadd --system --gid 999 pyspire && useradd --system --uid 999 --gid 999 --home-dir /var/lib/pyspire --shell /usr/sbin/nologin pyspire \
    && install -d -o pyspire -g pyspire -m 0700 /var/lib/pyspire \
    && install -d -o pyspire -g pyspire -m 0755 /run/spire
COPY --from=build /wheels /wheels
# --no-deps: the first stage put every dependency in /wheels already, and the operator's wheel,
# built from this checkout, names the workload library by its path there (pyspire-spiffe @
# file:///src/core, see core/build_operator.py), which this stage does not have; pip check then
# confirms the installed set is complete.
RUN python -m pip install --no-cache-dir --no-index --no-deps /wheels/*.whl && python -m pip check && rm -rf /wheels
# The server runs as pyspire; the agent's pod runs it as root (it attests other users' processes).
USER pyspire
WORKDIR /var/lib/pyspire
# 8081: agents and admins (TLS); 8080: health_checks; 9988: Prometheus (as the manifests set them).
EXPOSE 8081 8080 9988
ENTRYPOINT []
CMD ["pyspire-server", "--version"]
