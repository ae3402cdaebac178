# StreamScore services image: `streamscore api|scorer|sink|migrate` (see compose.yaml).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so code edits do not reinstall TensorFlow.
COPY pyproject.toml constraints.txt README.md* ./
RUN mkdir -p streamscore && touch streamscore/__init__.py \
    && pip install --constraint=constraints.txt . && pip uninstall -y streamscore
COPY schemas ./schemas
COPY infra ./infra
COPY store ./store
COPY streamscore ./streamscore
COPY migrations ./migrations
COPY models ./models
COPY ingest_api ./ingest_api
COPY scorer ./scorer
COPY sink ./sink
RUN pip install --no-deps . && streamscore --help >/dev/null

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin streamscore
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2
USER streamscore
WORKDIR /home/streamscore
EXPOSE 8000 9100
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamscore"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
