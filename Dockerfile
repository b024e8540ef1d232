# Tune Studio image: a Hugging Face Docker Space as is (README front matter: sdk docker, app_port 7860),
# or any Docker host.
#   docker build -t tune-studio .                                  # CPU torch (the `tiny` demo branch)
#   docker build -t tune-studio \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .   # CUDA torch for GPU hosts
#   docker run -p 7860:7860 -v tunes-data:/data tune-studio        # add --gpus all with the CUDA build
# On a Space, a Space variable named TORCH_INDEX is passed as this build argument.
FROM python:3.11-slim

# The torch wheel index: .../whl/cpu (default) or a CUDA one, .../whl/cu128 and the like. The CUDA
# wheels bring their own CUDA libraries; the host needs only the NVIDIA driver (and the container toolkit).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Same version as requirements.txt (a test keeps them equal).
ARG TORCH_VERSION=2.13.0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# No system packages: opencv-python-headless and torch wheels bundle the libraries they link
# (beyond libc, libstdc++ and zlib, which the base image has).

# Dependencies first, so that code changes do not reinstall them. torch comes from its own index
# (CPU or CUDA build); requirements.txt then finds torch==TORCH_VERSION already installed.
COPY requirements.txt /tmp/requirements.txt
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Spaces run the container as uid 1000. /data is where a Space's persistent storage is mounted (at run
# time only); created here and owned by the user, it is writable without that storage too (then it is
# lost on restart), and a named Docker volume mounted there starts with the same owner.
RUN useradd --create-home --uid 1000 user \
    && mkdir -p /data \
    && chown user:user /data
USER 1000:1000
ENV HOME=/home/user \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TUNES_DATA_DIR=/data \
    HF_HOME=/data/.huggingface
WORKDIR /home/user/app

COPY --chown=1000:1000 . /home/user/app

EXPOSE 7860
# Start-up imports torch and diffusers and opens the database: give it time before counting failures.
HEALTHCHECK --interval=30s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GRADIO_SERVER_PORT', '7860') + '/', timeout=8)"]

CMD ["python", "app.py"]
