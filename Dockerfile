# The ResKD service image: the API, workers, the Ray executor and Ray nodes.
# torch from PyPI is a CUDA build: GPU workers need only the NVIDIA container toolkit on the host.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RESKD_ARTIFACT_ROOT=/data

WORKDIR /app
# The heavy layer first, so code changes do not reinstall it.
RUN pip install torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml README.md ./
COPY space space
COPY search search
COPY distill distill
COPY api api
COPY db db
RUN pip install ".[ray]"

RUN useradd --create-home --uid 1000 reskd && mkdir -p /data && chown reskd /data
USER reskd
VOLUME /data
EXPOSE 8321
ENTRYPOINT ["reskd"]
CMD ["serve", "--host", "0.0.0.0", "--workers", "0"]
