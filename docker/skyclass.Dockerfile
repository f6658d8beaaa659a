# The skyclass CLI, running the demo against the `db` service.
FROM python:3.11-slim-bookworm
WORKDIR /opt/skyclass
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
COPY migrations ./migrations
RUN pip install --no-cache-dir -c constraints.txt -e .   # editable: migrations/ stays beside src/
ENTRYPOINT ["skyclass"]
CMD ["demo"]
