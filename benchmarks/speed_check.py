"""Training and scoring speed of the bundle presets, with the FLOPs and memory that explain it.

For each preset (``demo``: ``train.json``, 64x64; ``reference``: ``train.json`` + ``reference.json``, the paper's
256x256 network with PCM branches) and stage (1; 2: ``start_pcm_stage``, encoder frozen) it prints

- ``images_per_s``: the project's training step (t and ε drawn, forward, mixed loss, backward, AdamW, EMA update)
  after warm-up steps, timed for ``--seconds``; on a CPU also ``images_per_cpu_s``, per second of the process's
  CPU time (all its threads), which a machine shared with other jobs disturbs less than wall time;
- ``gflop_per_image``: forward, and forward + backward of one training image, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no memory, no compute);
- ``tflop_per_s`` (achieved: counted FLOPs x images/s) and ``mfu`` against the dense bf16 peak of the device found
  (``PEAK_BF16_TFLOPS``; none for a CPU);
- ``saved_mib_per_image``: the activations one more image saves for backward (fp32), from saved-tensor hooks on
  the meta device (the difference between batch 2 and batch 1, so weights and other per-batch constants cancel);
- ``peak_mib``: ``torch.cuda.max_memory_allocated`` on CUDA, the process's peak RSS so far on CPU;
- ``largest_batch``: an estimate, (device memory − weights, gradients, AdamW and EMA state) / saved bytes per image,
  without activation checkpointing (with it, far more fit).

``--score`` adds scoring images/s for ``inference.json``'s schedule (demo preset) and ``reference_scoring.json``'s
(reference preset), timed on a few evaluations and extrapolated (as ``throughput.py``).

Each switch of ``train.json`` has a flag here (``--amp``, ``--channels-last``, ``--compile``,
``--checkpointing``), so one script measures any combination; the script runs against older checkouts of the
package too (switches they lack are simply not passed), which is how before/after pairs are measured.

Usage::

    python benchmarks/speed_check.py [--device cuda] [--presets demo reference] [--stages 1 2] [--amp on]
        [--batch N] [--seconds 20] [--score] [--output results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, cast

import throughput
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDPMScheduler
from torch.utils.flop_counter import FlopCounterMode

from monai_diff3m.engines import Diff3MLoss, Diff3MPrepareBatch
from monai_diff3m.handlers import WarmupEMAHandler
from monai_diff3m.inferers import Diff3MDiffusionInferer, bf16_is_fast
from monai_diff3m.networks import Diff3MUNet

CONFIG_DIR = Path(__file__).resolve().parent.parent / "bundles" / "diff3m" / "configs"
PRESETS = {"demo": ["train.json"], "reference": ["train.json", "reference.json"]}
#: The schedule each preset is scored with.
SCORING_CONFIGS = {"demo": ["inference.json"], "reference": ["inference.json", "reference_scoring.json"]}
#: Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets, by device-name fragment.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def preset(name: str, stage: int) -> dict[str, Any]:
    """The preset's network arguments, image size and batch size, read from the bundle configs."""
    parser = ConfigParser()
    parser.read_config([str(CONFIG_DIR / file) for file in PRESETS[name]])
    if stage == 2:
        parser["use_pcm"] = True
    return {
        "network_args": dict(parser.get_parsed_content("network_args")),
        "image_size": parser.get_parsed_content("image_size"),
        "batch_size": parser.get_parsed_content("batch_size"),
    }


def build(network_args: dict[str, Any], stage: int, checkpointing: bool) -> Diff3MUNet:
    network = Diff3MUNet(**network_args, activation_checkpointing=checkpointing)
    if stage == 2:
        network.start_pcm_stage()
    return network


def _training_pass(network: Diff3MUNet, batch: dict[str, torch.Tensor], scheduler: DDPMScheduler) -> None:
    image, target, _, inputs = Diff3MPrepareBatch(scheduler)(batch)
    Diff3MLoss()(Diff3MDiffusionInferer(scheduler)(image, network, **inputs), target).backward()


def _saved_bytes(network: Diff3MUNet, batch_size: int, image_size: int, scheduler: DDPMScheduler) -> int:
    """Bytes of the tensors (not the weights) a training pass saves for backward, each tensor counted once."""
    sizes: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter):
            sizes[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    batch = throughput.random_batch(batch_size, image_size, torch.device("meta"))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _training_pass(network, batch, scheduler)
    return sum(sizes.values())


def meta_costs(spec: dict[str, Any], stage: int, scheduler: DDPMScheduler) -> dict[str, float]:
    """FLOPs per image (forward; forward + backward) and fp32 bytes saved for backward per image, on meta."""
    with torch.device("meta"):
        network = build(spec["network_args"], stage, checkpointing=False)
    image_size = spec["image_size"]
    saved = {batch_size: _saved_bytes(network, batch_size, image_size, scheduler) for batch_size in (1, 2)}
    batch = throughput.random_batch(1, image_size, torch.device("meta"))
    with FlopCounterMode(display=False) as forward:
        with torch.no_grad():
            timesteps = torch.zeros(1, dtype=torch.long, device="meta")
            network(batch["image"], timesteps, batch["ehr"], batch["ehr_missing"], x0=batch["image"])
    with FlopCounterMode(display=False) as training:
        _training_pass(network, batch, scheduler)
    parameters = sum(p.numel() for p in network.parameters())
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    return {
        "gflop_forward_per_image": forward.get_total_flops() / 1e9,
        "gflop_training_per_image": training.get_total_flops() / 1e9,
        "saved_bytes_per_image": float(saved[2] - saved[1]),
        # fp32 weights and EMA, gradients and two AdamW moments of the trainable ones
        "state_bytes": float(4 * (2 * parameters + 3 * trainable)),
        "parameters": float(parameters),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def peak_tflops(device: torch.device) -> float | None:
    name = device_name(device)
    return next((peak for fragment, peak in PEAK_BF16_TFLOPS.items() if fragment in name), None)


def memory_bytes(device: torch.device) -> float | None:
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return None


def time_training(
    spec: dict[str, Any], stage: int, batch_size: int, device: torch.device, args: argparse.Namespace
) -> dict[str, Any]:
    """Images/s of the training step with the requested switches, timed for ``args.seconds`` after warm-up."""
    torch.manual_seed(0)
    network = build(spec["network_args"], stage, args.checkpointing).to(device)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ema = WarmupEMAHandler(network, decay=0.9999)
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")
    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02)
    if args.compile:
        network.compile()  # in place: the module, its parameters and the EMA's view of them stay the same objects
    amp = args.amp == "on" or (args.amp == "auto" and bf16_is_fast(device))
    engine = throughput.training_engine(network, optimizer, scheduler, device, amp, finite_check_every=args.log_every)
    engine.state.ema_momentum = 1e-4
    batch = throughput.random_batch(batch_size, spec["image_size"], device)

    def iterate() -> None:
        throughput.training_iteration(engine, batch)
        ema._update_ema_model(cast(Engine, engine), "ema_momentum")

    throughput._reset_peak(device)
    for _ in range(args.warmup):
        iterate()
    throughput._synchronize(device)
    start, cpu_start, iterations = time.perf_counter(), time.process_time(), 0
    while iterations < 1 or time.perf_counter() - start < args.seconds:
        iterate()
        iterations += 1
        if iterations % 5 == 0 or device.type == "cpu":
            throughput._synchronize(device)
    throughput._synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "batch": batch_size,
        "iterations": iterations,
        "images_per_s": batch_size * iterations / seconds,
        "images_per_cpu_s": batch_size * iterations / cpu_seconds,
        "peak_mib": throughput._peak_mib(device),
        "amp": amp,
    }


def time_scoring(name: str, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Scoring images/s with the preset's network and scoring config's schedule (a few evaluations, extrapolated)."""
    spec = preset(name, 2 if name == "reference" else 1)
    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02)
    schedule = throughput.bundle_schedule(SCORING_CONFIGS[name], spec["image_size"], scheduler)
    torch.manual_seed(0)
    network = build(spec["network_args"], 1, checkpointing=False).to(device)
    if args.channels_last:
        network = network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    amp = args.amp == "on" or (args.amp == "auto" and device.type == "cuda")
    setting = throughput.Setting(name, args.score_batch, amp, schedule)
    result = throughput.measure_scoring(
        network, setting, args.score_batch, spec["image_size"], args.score_evaluations, device, scheduler
    )
    return {"config": SCORING_CONFIGS[name][-1], "amp": amp, **result}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    scheduler = DDPMScheduler(num_train_timesteps=1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02)
    peak, memory = peak_tflops(device), memory_bytes(device)
    results: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "peak_bf16_tflops": peak,
        "switches": {k: getattr(args, k) for k in ("amp", "channels_last", "compile", "checkpointing", "log_every")},
        "training": [],
        "scoring": [],
    }
    for name in args.presets:
        for stage in args.stages:
            spec = preset(name, stage)
            costs = meta_costs(spec, stage, scheduler)
            batch_size = args.batch or spec["batch_size"]
            timed = time_training(spec, stage, batch_size, device, args)
            tflops = costs["gflop_training_per_image"] * timed["images_per_s"] / 1e3
            largest = None if memory is None else int((memory - costs["state_bytes"]) // costs["saved_bytes_per_image"])
            results["training"].append(
                {
                    "preset": name,
                    "stage": stage,
                    **timed,
                    "gflop_forward_per_image": costs["gflop_forward_per_image"],
                    "gflop_training_per_image": costs["gflop_training_per_image"],
                    "tflop_per_s": tflops,
                    "mfu": None if peak is None else tflops / peak,
                    "saved_mib_per_image": costs["saved_bytes_per_image"] / 2**20,
                    "largest_batch_estimate": largest,
                    "parameters_m": costs["parameters"] / 1e6,
                }
            )
            print(json.dumps(results["training"][-1]), flush=True)
    if args.score:
        for name in args.presets:
            results["scoring"].append(time_scoring(name, device, args))
            print(json.dumps(results["scoring"][-1]), flush=True)
    return results


def table(results: dict[str, Any]) -> str:
    lines = [
        f"device: {results['device']}, torch {results['torch']}, switches {results['switches']}",
        "",
        "| preset | stage | batch | images/s | GFLOP/img fwd, train | TFLOP/s | MFU | saved MiB/img (fp32) "
        "| peak MiB | largest batch (est.) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["training"]:
        mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f} %"
        largest = "-" if row["largest_batch_estimate"] is None else str(row["largest_batch_estimate"])
        lines.append(
            f"| {row['preset']} | {row['stage']} | {row['batch']} | {row['images_per_s']:.3g} | "
            f"{row['gflop_forward_per_image']:.4g}, {row['gflop_training_per_image']:.4g} | "
            f"{row['tflop_per_s']:.3g} | {mfu} | {row['saved_mib_per_image']:.0f} | {row['peak_mib']:.0f} | {largest} |"
        )
    for row in results["scoring"]:
        lines.append(
            f"\nscoring {row['config']}: {row['images_per_s']:.3g} images/s, {row['evaluations_per_image']} "
            f"evaluations/image (timed {row['measured_evaluations']}, batch {row['measured_batch']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=["demo", "reference"])
    parser.add_argument("--stages", nargs="+", type=int, choices=[1, 2], default=[1, 2])
    parser.add_argument("--batch", type=int, help="training batch; default the preset's batch_size")
    parser.add_argument(
        "--amp",
        choices=["auto", "on", "off"],
        default="auto",
        help="bf16; auto: training as train.json (where native), scoring on CUDA only",
    )
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing of the UNet blocks")
    parser.add_argument("--log-every", type=int, default=1, help="finite-loss check every N steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per preset and stage")
    parser.add_argument("--score", action="store_true", help="also time scoring with each preset's schedule")
    parser.add_argument("--score-batch", type=int, default=16)
    parser.add_argument("--score-evaluations", type=int, default=4, help="evaluations timed, then extrapolated")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    results = run(args)
    print(table(results))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
