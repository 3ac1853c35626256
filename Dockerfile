# The mambaviz app in a container, serving 0.0.0.0:7860.
#   CPU (default):  docker build -t mambaviz . && docker run -p 7860:7860 mambaviz
#   CUDA:           docker build --build-arg VARIANT=cuda -t mambaviz:cuda . && docker run --gpus all -p 7860:7860 mambaviz:cuda
# The CUDA image also builds mamba-ssm and causal-conv1d, whose kernels speed up the Mamba drafter's step.
ARG VARIANT=cpu

FROM python:3.11-slim AS base-cpu
# PyPI's Linux torch wheel bundles CUDA libraries of a few GB; the CPU build avoids them.
RUN pip install --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu

FROM pytorch/pytorch:2.7.1-cuda12.6-cudnn9-devel AS base-cuda
# The devel image has nvcc, which mamba-ssm and causal-conv1d need to build their kernels.
RUN pip install --no-cache-dir packaging ninja \
    && pip install --no-cache-dir --no-build-isolation causal-conv1d mamba-ssm

FROM base-${VARIANT}
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --create-home app && chown -R app /app
USER app
ENV PYTHONUNBUFFERED=1 GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 HF_HOME=/home/app/.cache/huggingface
EXPOSE 7860
CMD ["python", "app.py"]
