# aaconv on a CUDA machine:
#   docker build -t aaconv .
#   docker run --gpus all --ipc=host -v /data:/data:ro -v $PWD/outputs:/workspace/aaconv/outputs \
#     -v aaconv-cache:/cache aaconv \
#     torchrun --standalone --nproc_per_node=8 train.py experiment=resnet50_imagenet data.root=/data/imagenet
# --ipc=host (or --shm-size=32g): DataLoader workers hand batches over through /dev/shm, and Docker's 64 MB default
# fails with 8 processes x 8 workers. Run outputs go to the mounted outputs/ (and multirun/ for sweeps); the
# built-in shapes set, torch.hub and Hugging Face downloads go to the /cache volume. To write files as yourself,
# add --user $(id -u):$(id -g); check the data first with: python scripts/check_data.py /data/imagenet --workers 16
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /workspace/aaconv
# Dependencies first, in a layer of their own: editing the code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
print('\n'.join(p['dependencies'] + extras['wandb'] + extras['tensorboard'] + extras['slurm'] + extras['fast-eval'] + extras['shards']))" \
    > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY README.md ./
COPY aaconv ./aaconv
RUN pip install --no-cache-dir --no-deps -e .
COPY configs ./configs
COPY scripts ./scripts
COPY train.py eval.py ./

RUN useradd --create-home --uid 1000 aaconv \
    && mkdir -p /cache outputs multirun && chown aaconv:aaconv /cache outputs multirun
ENV AACONV_CACHE=/cache TORCH_HOME=/cache/torch HF_HOME=/cache/huggingface
VOLUME ["/cache", "/workspace/aaconv/outputs", "/workspace/aaconv/multirun"]
USER aaconv
CMD ["python", "train.py"]
