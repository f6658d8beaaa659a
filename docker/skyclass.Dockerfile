# The skyclass CLI, running the demo against the `db` service.
FROM python:3.11-slim-bookworm
# `skyclass compile` (run by the demo) builds each model into a shared library with gcc;
# the slim image has no compiler. Same Debian release as the db image, so the library
# links against the glibc the server loads it with.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/skyclass
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
# src/skyclass/report/data/benchmarks.md links to it; the wheel holds a copy.
COPY docs/benchmarks.md ./docs/benchmarks.md
# A normal install: migrations, SQL and demo data ship inside the package.
RUN pip install --no-cache-dir -c constraints.txt .
ENTRYPOINT ["skyclass"]
CMD ["demo"]
