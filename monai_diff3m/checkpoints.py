"""Reading Diff3M checkpoints: self-describing, so inference rebuilds exactly the network that was trained.

``CheckpointWriter`` stores the network's constructor arguments and the EHR groups next to the weights, so the
inference and evaluation bundles need only the checkpoint path: a model trained with ``--network_args#channels``
or ``--ieca_mode spatial`` is scored with the same settings without repeating them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from monai.networks.schedulers import DDPMScheduler
from monai.utils import str2bool

from monai_diff3m import schema
from monai_diff3m.data.phantom_folder import is_phantom_data
from monai_diff3m.errors import InvalidInputError, MissingInputError
from monai_diff3m.inferers.image_scores import DEFAULT_SCORE
from monai_diff3m.io import atomic_path
from monai_diff3m.networks.diff3m_unet import Diff3MUNet
from monai_diff3m.transforms.ehr import DEFAULT_AGE_RANGE, ehr_group_sizes
from monai_diff3m.transforms.image import DIFFUSION_IMAGE_RANGE

logger = logging.getLogger(__name__)

PCM_PREFIXES = ("pcm_encoders.", "pcm_decoder.")
#: ``training_data`` of a checkpoint trained on the generated phantoms (``films`` otherwise).
SYNTHETIC_TRAINING_DATA = "synthetic phantoms"
#: The noise schedule of checkpoints that do not record theirs (before 0.6.0): every one of them was trained with it.
UNRECORDED_SCHEDULE = {"schedule": "linear_beta", "beta_start": 0.0001, "beta_end": 0.02}
_EHR_PREFIXES = ("ehr_tokenizer.", "image_encoder.", "image_query.", "pooled_attention.", "condition_")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint dict, with a clear error when the file is missing or not a checkpoint.

    ``mmap=True`` maps the tensors instead of reading them: for the metadata alone, a 114M-parameter checkpoint
    costs a few milliseconds instead of reading half a gigabyte.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint {path} not found; train first (python -m monai.bundle run training ...)")
    if path.stat().st_size == 0:  # torch would blame mmap and the save format instead
        raise InvalidInputError(
            f"checkpoint {path} is empty (0 bytes): an interrupted copy or download; copy it again or retrain"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several unrelated types for a corrupt or foreign file
        raise InvalidInputError(f"checkpoint {path} cannot be read as a PyTorch checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or "network" not in checkpoint:
        raise InvalidInputError(
            f"checkpoint {path} has no 'network' entry; expected a file written by CheckpointWriter"
        )
    return checkpoint


def checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata saved with a checkpoint: ``network_args``, ``ehr_groups``, ``image_size``, … (weights not read)."""
    return _metadata(read_checkpoint(path, mmap=True), Path(path))


def _metadata(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    metadata = checkpoint.get("metadata", {})
    if "network_args" not in metadata:
        raise InvalidInputError(
            f"checkpoint {path} has no 'network_args' metadata; it was not written by the Diff3M bundle"
        )
    return metadata


def checkpoint_name(ieca_mode: str | None = None, use_pcm: bool | str | None = False, preset: str | None = None) -> str:
    """``diff3m_<ieca_mode>[_pcm]``, or ``diff3m_<preset>[_pcm]`` for a preset's runs (``reference``): the name of
    a run's ``_last.pt``/``_best.pt`` files and of its output folders, made here only (every config calls this).

    ``_pcm`` marks a model trained through the PCM stage (``train_pcm.json``), which scoring with ``use_pcm`` looks
    for; the reference preset's first stage has PCM branches but keeps the plain name (``pcm_stage`` false).
    ``None`` (a scoring setting left to the checkpoint) picks the bundle's default, ``spatial`` without PCM;
    ``use_pcm`` may be a command-line string (``"true"``).
    """
    family = preset or ieca_mode or "spatial"
    return f"diff3m_{family}{'_pcm' if str2bool(use_pcm or False) else ''}"


def trained_or_shipped(
    trained: str | Path, shipped: str | Path, default_dir: str | Path, ieca_mode: str | None, use_pcm: Any
) -> str:
    """The checkpoint to score: ``trained`` when it exists, else the bundle's shipped ``models/model.pt``.

    The shipped model (a Diff3M trained on public NIH films, ``models/model_card.json``) lets a new user score films
    right after installing. It stands in only where nothing else was asked for: ``trained`` lies in the bundle's
    default model folder ``default_dir`` and no ``ieca_mode`` or ``use_pcm`` was requested; a model named in any
    other way that does not exist stays an error ("train first").
    """
    requested_elsewhere = Path(trained).parent.resolve() != Path(default_dir).resolve()
    if Path(trained).is_file() or requested_elsewhere or ieca_mode is not None or str2bool(use_pcm or False):
        return str(trained)
    if not Path(shipped).is_file():
        return str(trained)
    card = checkpoint_metadata(shipped).get("model_card", {})
    logger.info(
        "no trained model at %s: scoring with the shipped model %s (%s; test %s)",
        trained,
        shipped,
        card.get("name", "no model card"),
        card.get("test_metrics", {}).get(DEFAULT_SCORE, "not measured"),
    )
    return str(shipped)


def run_name(path: str | Path) -> str:
    """The name of the outputs of scoring checkpoint ``path``: its file name without ``.pt`` and ``_best``/``_last``
    (``models/diff3m_none_best.pt`` -> ``diff3m_none``), so a folder is named after the model that was scored."""
    stem = Path(path).name.removesuffix(".pt")
    for suffix in ("_best", "_last"):
        stem = stem.removesuffix(suffix)
    return stem


class CheckpointSettingError(ValueError):
    """A requested setting contradicts the checkpoint it applies to; the message names setting, file and values."""


def fixed_settings(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The scoring settings a checkpoint fixes, read from its metadata (checkpoints older than a setting get the
    value every checkpoint had before it existed). The one place inference reads them from."""
    network_args = metadata["network_args"]
    return {
        "ieca_mode": network_args.get("ieca_mode", "spatial"),
        "use_pcm": bool(network_args.get("use_pcm", False)),
        "ehr_groups": list(metadata["ehr_groups"]),
        "image_size": metadata["image_size"],
        "intensity_mode": metadata.get("intensity_mode", "fixed"),
        "image_range": list(metadata.get("image_range", DIFFUSION_IMAGE_RANGE)),
        "age_range": list(metadata.get("age_range", DEFAULT_AGE_RANGE)),
    }


def check_requested_settings(path: str | Path, requested: Mapping[str, Any]) -> None:
    """Refuse settings that contradict checkpoint ``path``: a model is scored only as it was trained.

    ``requested`` maps a setting of :func:`fixed_settings` to the value the run was given (``None``: not given,
    taken from the checkpoint). Each contradiction is named with the setting, the checkpoint and both values.

    Raises:
        CheckpointSettingError: at least one requested value differs from the checkpoint's.
    """
    fixed = fixed_settings(checkpoint_metadata(path))
    conflicts = [
        f"--{name} {value!r} (the checkpoint was trained with {fixed[name]!r})"
        for name, value in requested.items()
        if value is not None and _comparable(value) != _comparable(fixed[name])
    ]
    if conflicts:
        raise CheckpointSettingError(
            f"settings contradict checkpoint {path}: {'; '.join(conflicts)}. The checkpoint fixes these settings: "
            "leave them out (they are read from the checkpoint) or score with a checkpoint trained with them"
        )


def _comparable(value: Any) -> Any:
    """One spelling per value: command-line strings ``"true"``/``"64"``, tuples and lists compare as equal."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return str2bool(text)
        try:
            return float(text)
        except ValueError:
            return text
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def noise_scheduler(metadata: Mapping[str, Any]) -> DDPMScheduler:
    """The noise schedule a checkpoint was trained with, which scoring must reuse: its recorded ``scheduler_args``
    (``train.json`` writes them), else ``UNRECORDED_SCHEDULE`` with the network's ``num_train_timesteps``."""
    recorded = metadata.get("scheduler_args")
    if recorded is None:
        recorded = {"num_train_timesteps": metadata["network_args"]["num_train_timesteps"], **UNRECORDED_SCHEDULE}
    return DDPMScheduler(**recorded)


def network_for_checkpoint(path: str | Path) -> Diff3MUNet:
    """A ``Diff3MUNet`` with the architecture stored in checkpoint ``path``, its weights not yet loaded.

    While no checkpoint exists, it has the class defaults, which are the bundle's architecture (the one
    ``metadata.json`` describes), so that the Model Zoo's shape and property checks run on a fresh bundle; loading
    the weights then fails with "train first".
    """
    if not Path(path).is_file():
        return Diff3MUNet(ehr_group_sizes=ehr_group_sizes(schema.ehr_groups()))
    return Diff3MUNet(**_network_args(checkpoint_metadata(path), Path(path)))


def network_from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Diff3MUNet:
    """Rebuild the trained ``Diff3MUNet`` from the checkpoint's stored constructor arguments and load its weights."""
    checkpoint = read_checkpoint(path, map_location)
    network = Diff3MUNet(**_network_args(_metadata(checkpoint, Path(path)), Path(path)))
    load_state_dict_explained(network, checkpoint["network"], Path(path))
    return network


def _network_args(metadata: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's network arguments, after checking that its EHR tokens are the slots the EHR field table
    (``schema.EHR_FIELDS``) encodes for its groups: a model trained before a field was added to a group it uses
    cannot read the new encoding."""
    network_args = dict(metadata["network_args"])
    if network_args.get("ieca_mode", "spatial") == "none" or "ehr_groups" not in metadata:
        return network_args
    trained = list(network_args.get("ehr_group_sizes", ()))
    try:
        encoded: list[int] | str = ehr_group_sizes(metadata["ehr_groups"])
    except ValueError as error:
        encoded = str(error)
    if trained != encoded:
        raise CheckpointSettingError(
            f"checkpoint {path} was trained with {trained} EHR tokens for groups {list(metadata['ehr_groups'])}, but "
            f"the EHR field table (schema.EHR_FIELDS) encodes {encoded}: the table changed since it was trained; "
            f"score it with the table it was trained with, or retrain"
        )
    return network_args


def load_network_weights(
    network: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load a checkpoint's weights into an existing network, explaining any mismatch."""
    load_state_dict_explained(network, read_checkpoint(path, map_location)["network"], Path(path))
    return network


def load_state_dict_explained(
    network: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, ignore_missing: tuple[str, ...] = ()
) -> None:
    """``load_state_dict`` raising a ``ValueError`` that explains a mismatch; keys starting with ``ignore_missing``
    may be absent."""
    try:
        mismatch = network.load_state_dict(state, strict=False)
    except RuntimeError as error:  # same keys, different shapes
        raise InvalidInputError(
            f"checkpoint {path} does not fit the network (tensor shapes differ: other channels or EHR groups?): {error}"
        ) from error
    missing = [key for key in mismatch.missing_keys if not key.startswith(ignore_missing)]
    _explain_mismatch(path, network, missing, mismatch.unexpected_keys)


def _explain_mismatch(path: Path, network: torch.nn.Module, missing: list[str], unexpected: list[str]) -> None:
    """Raise a ``ValueError`` saying which setting (PCM, IECA mode, architecture) the checkpoint was trained with."""
    if not missing and not unexpected:
        return
    hints = []
    if any(key.startswith(PCM_PREFIXES) for key in missing):
        hints.append("the checkpoint has no PCM branches (a stage-1 model): use use_pcm=False or run stage 2")
    if any(key.startswith(PCM_PREFIXES) for key in unexpected):
        hints.append("the checkpoint has PCM branches: build the network with use_pcm=True")
    if any(key.startswith(_EHR_PREFIXES) or ".attn2." in key for key in missing + unexpected):
        mode = getattr(network, "ieca_mode", "?")
        hints.append(f"the checkpoint was trained with another ieca_mode than this network's {mode!r}")
    raise InvalidInputError(
        f"checkpoint {path} does not fit the network: {len(missing)} missing key(s) (e.g. {missing[:3]}), "
        f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[:3]}). "
        + ("; ".join(hints) or "check channels/attention settings")
    )


def training_data_kind(train_csv: str | Path) -> str:
    """What a model is trained on, stored in its checkpoint: ``"synthetic phantoms"`` or ``"films"``."""
    return SYNTHETIC_TRAINING_DATA if is_phantom_data(train_csv) else "films"


def training_data_warnings(metadata: dict[str, Any], scored_input: str | Path | None) -> list[str]:
    """Log and return a warning when a model trained on synthetic phantoms scores anything but phantoms.

    The phantom main job's models are demonstrations: on real films their scores are meaningless (0.25-0.42 AUROC
    on 20 NIH films), and nothing else in ``scores.csv`` would tell.
    """
    if metadata.get("training_data") != SYNTHETIC_TRAINING_DATA or is_phantom_data(scored_input):
        return []
    warning = (
        "This model was trained on synthetic phantoms, not on chest X-rays: its scores on real films are not "
        "meaningful. Train on real normal films first (see the bundle's README, 'Real data')."
    )
    logger.warning(warning)
    return [warning]


#: The schedule reference scores were recorded with before checkpoints named it (bundles 0.4.0 to 0.7.0 scored
#: every image size with it).
LEGACY_REFERENCE_SCHEDULE = "ddim_inversion L=200 steps=10"


def record_reference_scores(path: str | Path, scores_csv: str | Path, schedule: str, score: str = DEFAULT_SCORE) -> int:
    """Store ``score`` of the normal films (``No Finding`` = 1) of a labelled ``scores.csv`` in checkpoint ``path``.

    Scored on validation normals the model never trained on, they give every later ``anomaly_score`` of that score
    a reference: inference writes ``anomaly_percentile``, the percent of these normals scoring at most as high.
    ``schedule`` (``ScoringSchedule.name``) is the schedule they were scored with: a score's scale grows with the
    noise level, so they are a reference only for films scored the same way (``reference_scores``).
    Returns the number of normals recorded.
    """
    table = pd.read_csv(scores_csv)
    normals = sorted(float(value) for value in table.loc[table[schema.NO_FINDING] == 1, score].dropna())
    if not normals:
        raise InvalidInputError(f"{scores_csv} has no normal film ({schema.NO_FINDING} = 1) with a {score!r} score")
    checkpoint = read_checkpoint(path)
    checkpoint["metadata"] = {
        **checkpoint.get("metadata", {}),
        "reference_scores": normals,
        "reference_score": score,
        "reference_schedule": schedule,
    }
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)
    return len(normals)


def reference_scores(metadata: Mapping[str, Any], score: str, schedule: str) -> list[float] | None:
    """The checkpoint's reference normals for films scored with ``score`` under ``schedule``, else None (then no
    ``anomaly_percentile`` is written: a percentile among normals scored another way would be meaningless)."""
    recorded = metadata.get("reference_scores")
    if not recorded or metadata.get("reference_score") != score:
        return None
    recorded_schedule = metadata.get("reference_schedule", LEGACY_REFERENCE_SCHEDULE)
    if recorded_schedule != schedule:
        logger.warning(
            "no anomaly_percentile: the checkpoint's reference normals were scored with %s, these films with %s",
            recorded_schedule,
            schedule,
        )
        return None
    return list(recorded)
