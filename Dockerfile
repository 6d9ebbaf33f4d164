# Chronos Engine: the kernel and every plugin in this repository, pinned by requirements.lock.
#
#   docker build -t chronos-engine .
#   docker run -p 8000:8000 -v chronos-data:/app/data -e CHRONOS_ADMIN_KEY=... chronos-engine
#
# Configuration comes from the environment (CHRONOS__SECTION__KEY=value) or from
# a file mounted at /app/config/chronos.yaml; see config/chronos.example.yaml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # caldav pulls in urllib3-future, which would otherwise overwrite urllib3 itself.
    URLLIB3_NO_OVERRIDE=1

# Install the kernel and every plugin distribution (not the example template),
# as regular packages; the sources are not kept in the image.
COPY . /src
RUN set -eux; \
    pkgs="/src"; \
    for dir in /src/plugins_builtin/*/ /src/plugins_contrib/*/ /src/web/; do \
        if [ -f "${dir}pyproject.toml" ]; then pkgs="$pkgs $dir"; fi; \
    done; \
    pip install --no-binary urllib3-future -c /src/requirements.lock $pkgs; \
    rm -rf /src

# pg_dump and pg_restore for backups of a PostgreSQL database (the backups
# plugin); they must be at least as new as the server.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --user-group chronos \
    && mkdir -p /app/data /app/config \
    && chown -R chronos:chronos /app
WORKDIR /app
USER chronos

# SQLite in the data volume unless CHRONOS__DATABASE__URL points elsewhere.
ENV CHRONOS__DATABASE__URL=sqlite+aiosqlite:////app/data/chronos.db
VOLUME ["/app/data"]
EXPOSE 8000

# Readiness: 503 (starting, shutting down, database unreachable) makes urlopen raise: unhealthy.
# /health/ready does not depend on a separate worker, so a stale worker does not take the API out.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status == 200 else 1)"]

CMD ["chronos", "serve", "--host", "0.0.0.0"]
