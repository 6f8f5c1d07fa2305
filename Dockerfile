# aaconv on a CUDA machine: docker build -t aaconv . && docker run --gpus all -v /data:/data aaconv \
#   torchrun --nproc_per_node=8 train.py experiment=aa_resnet50_imagenet data.root=/data/imagenet
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /workspace/aaconv
COPY pyproject.toml README.md ./
COPY aaconv ./aaconv
RUN pip install --no-cache-dir -e ".[wandb,tensorboard,slurm]"
COPY configs ./configs
COPY scripts ./scripts
COPY train.py eval.py ./
ENV AACONV_CACHE=/workspace/cache
CMD ["python", "train.py"]
