"""What a training plan costs before it runs: GPU-hours from a published training rate scaled by each run's
multiply-adds per image, and on-demand dollars for the instance types of clusters/aws.yaml. Every factor is
printed with its source or marked as an assumption; bench/gpu_check.py measures the real rates on a GPU."""
from __future__ import annotations

from dataclasses import dataclass

# NVIDIA Deep Learning Examples, ResNet-50 v1.5 for PyTorch: training images/s per A100 80GB with AMP
REFERENCE_RATE = 2470.0
REFERENCE_MACS = 4.11e9  # ResNet-50's forward multiply-adds per 224×224 image
REFERENCE_SOURCE = "NVIDIA's published ResNet-50 v1.5 AMP training rate, 2,470 img/s per A100"
RATE_CAP = 10_000.0  # an assumption: img/s per A100 that small (32×32) nets do not pass, bound by kernel launches and data
FP32_FACTOR = 0.25  # an assumption: fp32 without TF32 (the official MSDNet/IMTA recipes), no published figure here
PRICE_SOURCE = "AWS EC2 on-demand, Linux, us-east-1"


@dataclass(frozen=True)
class Instance:
    gpus: int
    gpu: str
    speed: float        # training rate relative to one A100
    usd_per_hour: float


# A10G/A100: their dense FP16 tensor-core peaks, 125 / 312 TFLOPS (NVIDIA data sheets)
INSTANCES = {"g5.xlarge": Instance(1, "A10G", 125 / 312, 1.006), "g5.12xlarge": Instance(4, "A10G", 125 / 312, 5.672)}


def instance_for(gpus_per_trial: float) -> str:
    """The aws.yaml worker type a trial of this many GPUs runs on."""
    return "g5.xlarge" if gpus_per_trial <= 1 else "g5.12xlarge"


def images_per_s_per_gpu(macs_per_image: float, instance: Instance, amp: bool) -> float:
    """The reference rate scaled to a run: by its forward multiply-adds per trained image (all passes of a step;
    at most RATE_CAP), by the GPU's speed, and by FP32_FACTOR without AMP."""
    scaled = min(REFERENCE_RATE * REFERENCE_MACS / macs_per_image, RATE_CAP)
    return scaled * instance.speed * (1.0 if amp else FP32_FACTOR)


@dataclass(frozen=True)
class StageCost:
    images: int             # training images over all epochs
    macs_per_image: float   # forward multiply-adds per trained image, every pass of a step
    amp: bool


def gpu_hours(stages: list[StageCost], instance: Instance) -> float:
    return sum(s.images / images_per_s_per_gpu(s.macs_per_image, instance, s.amp) for s in stages) / 3600


def cost_lines(stages: list[StageCost], gpus_per_trial: float) -> list[str]:
    """Two lines: the GPU-hours with how they were estimated, and the on-demand cost."""
    name = instance_for(gpus_per_trial)
    instance = INSTANCES[name]
    hours = gpu_hours(stages, instance)
    instance_hours = hours / instance.gpus
    return [f"compute: {hours:,.0f} GPU-hours on {instance.gpu} ({REFERENCE_SOURCE}, scaled by each stage's "
            f"multiply-adds per image up to {RATE_CAP:,.0f} img/s (assumed), ×{instance.speed:.2f} for the {instance.gpu}: its FP16 peak over the A100's"
            + (f", ×{FP32_FACTOR} without AMP: assumed" if not all(s.amp for s in stages) else "")
            + "; evaluation not counted)",
            f"cost: {instance_hours:,.0f} {name} instance-hours × ${instance.usd_per_hour}/h = "
            f"{instance_hours * instance.usd_per_hour:,.0f} USD ({PRICE_SOURCE}; the head node not counted)"]
