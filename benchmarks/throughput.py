"""Training and scoring throughput of Diff3M: the reference settings against the project's defaults, same device.

Two settings, each at two network sizes (``--sizes``):

- ``reference`` (the authors' ``train.sh`` / ``sampling.sh``): fp32, batch 3 per GPU (they ran 8 GPUs, a global
  batch of 24), scoring by DDIM inversion with every timestep to L = 400 and back as their code indexes it (798
  network evaluations per image);
- ``defaults`` (this project's ``train.json`` / ``inference.json``): batch 16, bf16 autocast on CUDA (fp32 on CPU,
  where bf16 is slower), fused AdamW on CUDA, and ``inference.json``'s scoring schedule (read from the file; chosen
  by ``python -m monai_diff3m.experiments.scoring_study``).

Both settings use the same network (``--ieca-mode``, default the project's ``spatial``, without PCM branches), so
their ratio measures the speed settings alone; the authors' full network (pooled IECA with PCM branches, about 3
times the cost of one evaluation) is timed by ``benchmarks/gpu_check.sh``, which trains the reference preset.
Every network evaluation of a scoring run costs the same whatever the stride, so a long schedule is timed on a few
evaluations and extrapolated to the full count; the JSON says when (``extrapolated``).
With ``--quick`` (or on CPU at the 256x256 size) iterations and evaluations are few and the batch may be capped;
the JSON records what was measured (``measured_batch``, ``measured_evaluations``).

Peak memory is ``torch.cuda.max_memory_allocated`` per measurement on CUDA; on CPU it is the process's peak RSS
so far (``ru_maxrss``), which only grows, so the measurements run from the smallest to the largest.

Usage::

    python benchmarks/throughput.py [--device cuda] [--sizes demo reference] [--quick] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import monai
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer
from monai.networks.schedulers import DDPMScheduler

from monai_diff3m.engines import Diff3MLoss, Diff3MPrepareBatch
from monai_diff3m.handlers import FiniteLossCheck
from monai_diff3m.inferers import REFERENCE_SCHEDULE, Diff3MAnomalyInferer, Diff3MDiffusionInferer, ScoringSchedule
from monai_diff3m.io import atomic_path
from monai_diff3m.networks import Diff3MUNet
from monai_diff3m.packaged_bundle import config_files
from monai_diff3m.transforms import ehr_group_sizes

#: Network sizes: the CPU demo preset of train.json and the paper's 256x256 network (docs/method.md §2).
SIZES: dict[str, dict[str, Any]] = {
    "demo": {
        "image_size": 64,
        "channels": (32, 64, 64),
        "attention_levels": (False, False, True),
        "num_res_blocks": 1,
        "num_head_channels": 32,
    },
    "reference": {
        "image_size": 256,
        "channels": (128, 128, 256, 256, 512, 512),
        "attention_levels": (False, False, False, False, True, False),
        "num_res_blocks": 2,
        "num_head_channels": 512,
    },
}
EHR_GROUPS = ["demographics", "measurements"]


@dataclass(frozen=True)
class Setting:
    """How a model is trained and scored: batch size, precision and the scoring schedule."""

    name: str
    batch_size: int
    amp: bool
    schedule: ScoringSchedule


def bundle_schedule(config_names: list[str], image_size: int, scheduler: DDPMScheduler) -> ScoringSchedule:
    """The scoring schedule of the bundle's ``config_names`` for a checkpoint of ``image_size`` (the noise level
    follows the image size)."""
    parser = ConfigParser()
    parser.read_config(config_files(*config_names))
    parser.update({"image_size": image_size, "scheduler": scheduler})
    return ScoringSchedule(
        *(parser.get_parsed_content(key) for key in ("noising", "noise_level", "num_inference_steps", "ddim_indexing"))
    )


def settings(device: torch.device, image_size: int, scheduler: DDPMScheduler) -> tuple[Setting, Setting]:
    reference = Setting("reference", 3, False, REFERENCE_SCHEDULE)
    defaults = Setting(
        "defaults", 16, device.type == "cuda", bundle_schedule(["inference.json"], image_size, scheduler)
    )
    return reference, defaults


def build_network(size: str, ieca_mode: str, device: torch.device) -> Diff3MUNet:
    args = {key: value for key, value in SIZES[size].items() if key != "image_size"}
    network = Diff3MUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        norm_num_groups=32,
        ieca_mode=ieca_mode,
        ehr_group_sizes=ehr_group_sizes(EHR_GROUPS),
        **args,
    )
    return network.to(device)


def training_engine(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: DDPMScheduler,
    device: torch.device,
    amp: bool,
    finite_check_every: int = 1,
) -> SupervisedTrainer:
    """The bundle's training engine (MONAI's ``SupervisedTrainer`` with Diff3M's batch preparation, inferer, mixed
    loss and finite-loss check), ready for ``training_iteration`` without its data loader and handlers."""
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=[None],
        network=network,
        optimizer=optimizer,
        loss_function=Diff3MLoss(),
        prepare_batch=Diff3MPrepareBatch(scheduler),
        inferer=Diff3MDiffusionInferer(scheduler, autocast_dtype=torch.bfloat16 if amp else None),
        train_handlers=[FiniteLossCheck(finite_check_every)],
        decollate=False,
    )
    trainer.state.epoch_length = 10**9
    return trainer


def training_iteration(trainer: SupervisedTrainer, batch: dict[str, torch.Tensor]) -> None:
    """One iteration of the trainer's own process function (``SupervisedTrainer._iteration``) on ``batch``."""
    trainer.state.iteration += 1
    trainer._iteration(trainer, batch)


def random_batch(batch_size: int, image_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    slots = sum(ehr_group_sizes(EHR_GROUPS))
    return {
        "image": torch.rand(batch_size, 1, image_size, image_size, device=device) * 2 - 1,
        "ehr": torch.randn(batch_size, slots, device=device),
        "ehr_missing": torch.zeros(batch_size, slots, device=device),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


def measure_training(
    network: Diff3MUNet,
    setting: Setting,
    batch_size: int,
    image_size: int,
    iterations: int,
    device: torch.device,
    scheduler: DDPMScheduler,
) -> dict[str, Any]:
    """Images/s of the project's training step (sample t and ε, forward, mixed loss, AdamW), after one warm-up."""
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=1e-4, fused=device.type == "cuda" and setting.name == "defaults"
    )
    trainer = training_engine(network, optimizer, scheduler, device, setting.amp)
    batch = random_batch(batch_size, image_size, device)
    _reset_peak(device)
    training_iteration(trainer, batch)
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        training_iteration(trainer, batch)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "images_per_s": batch_size * iterations / seconds,
        "measured_batch": batch_size,
        "measured_iterations": iterations,
        "peak_mib": _peak_mib(device),
    }


def measure_scoring(
    network: Diff3MUNet,
    setting: Setting,
    batch_size: int,
    image_size: int,
    max_evaluations: int,
    device: torch.device,
    scheduler: DDPMScheduler,
) -> dict[str, Any]:
    """Images/s of the anomaly inferer; a schedule longer than ``max_evaluations`` is timed shorter and extrapolated."""
    schedule = setting.schedule
    full = schedule.evaluations
    per_direction = 2 if schedule.noising == "ddim_inversion" else 1  # up and down, or down only
    steps = max(1, min(full, max_evaluations) // per_direction)
    measured = steps * per_direction
    # timed on a strided schedule with the same noising: every evaluation costs the same whatever the indexing;
    # bf16 as the bundle scores with it: the inferer autocasts the network calls only
    scoring = partial(
        Diff3MAnomalyInferer,
        scheduler,
        noise_level=schedule.noise_level,
        noising=schedule.noising,
        autocast_dtype=torch.bfloat16 if setting.amp else None,
    )
    inferer = scoring(num_steps=steps)
    batch = random_batch(batch_size, image_size, device)
    network.eval()
    _reset_peak(device)
    scoring(num_steps=1)(batch["image"], network, batch["ehr"], batch["ehr_missing"])  # warm-up
    _synchronize(device)
    start = time.perf_counter()
    inferer(batch["image"], network, batch["ehr"], batch["ehr_missing"])
    _synchronize(device)
    seconds = time.perf_counter() - start
    seconds_per_image = seconds / batch_size * full / measured
    return {
        "images_per_s": 1.0 / seconds_per_image,
        "measured_batch": batch_size,
        "evaluations_per_image": full,
        "measured_evaluations": measured,
        "extrapolated": measured < full,
        "peak_mib": _peak_mib(device),
    }


def run(device: torch.device, sizes: list[str], quick: bool, ieca_mode: str) -> dict[str, Any]:
    """Measure both settings at each size on ``device``; return the results and the (defaults / reference) ratios."""
    torch.manual_seed(0)
    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "ieca_mode": ieca_mode,
        "quick": quick,
        "sizes": {},
    }
    for size in sizes:
        image_size = SIZES[size]["image_size"]
        cpu_reference = device.type == "cpu" and size == "reference"
        slow = quick or cpu_reference
        entry: dict[str, Any] = {}
        for setting in settings(device, image_size, scheduler):
            network = build_network(size, ieca_mode, device)
            batch_size = min(setting.batch_size, 2) if cpu_reference else setting.batch_size
            iterations = 1 if slow else 5
            max_evaluations = 2 if slow else 40
            entry[setting.name] = {
                "setting": asdict(setting),
                "training": measure_training(network, setting, batch_size, image_size, iterations, device, scheduler),
                "scoring": measure_scoring(
                    network, setting, batch_size, image_size, max_evaluations, device, scheduler
                ),
            }
            del network
        entry["ratio"] = {
            task: entry["defaults"][task]["images_per_s"] / entry["reference"][task]["images_per_s"]
            for task in ("training", "scoring")
        }
        results["sizes"][size] = entry
    return results


def table(results: dict[str, Any]) -> str:
    """A Markdown table of the results, as in benchmarks/README.md."""
    lines = [
        f"device: {results['device']}; torch {results['torch']}, monai {results['monai']}, "
        f"ieca_mode {results['ieca_mode']}",
        "",
        "| size | setting | training img/s | scoring img/s | scoring evals/img | peak MiB (train / score) |",
        "|---|---|---|---|---|---|",
    ]
    for size, entry in results["sizes"].items():
        for name in ("reference", "defaults"):
            training, scoring = entry[name]["training"], entry[name]["scoring"]
            note = f" (timed {scoring['measured_evaluations']}, extrapolated)" if scoring["extrapolated"] else ""
            batch = f" (batch {training['measured_batch']})"
            lines.append(
                f"| {size} | {name}{batch} | {training['images_per_s']:.3g} | {scoring['images_per_s']:.3g} | "
                f"{scoring['evaluations_per_image']}{note} | {training['peak_mib']:.0f} / {scoring['peak_mib']:.0f} |"
            )
        ratio = entry["ratio"]
        lines.append(f"| {size} | ratio defaults/reference | {ratio['training']:.3g}x | {ratio['scoring']:.3g}x | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["demo", "reference"])
    parser.add_argument(
        "--quick", action="store_true", help="one timed iteration and at most 2 timed network evaluations"
    )
    parser.add_argument("--ieca-mode", default="spatial", choices=["spatial", "pooled", "none"])
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    results = run(torch.device(args.device), args.sizes, args.quick, args.ieca_mode)
    text = json.dumps(results, indent=2)
    print(text)
    print(table(results))
    if args.output:
        with atomic_path(args.output) as temporary:
            temporary.write_text(text)
    return results


if __name__ == "__main__":
    main()
