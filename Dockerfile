# The operator image: `docker build -t infertune:0.1.0 .`
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# A fixed non-root user; the Deployment also asks for a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["infertune", "run"]
