"""The options of `minprot predict` and `minprot embed`, declared once: a base of what both share and one
dataclass per command (minprot_ds/options.py generates the typer commands and launch/predict.py's parser
from them). The job (minprot_ds/inference/job.py) takes an instance as its config and validates the values
it reads.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar, Optional

from minprot_ds.data.batching import DEFAULT_MAX_TOKENS
from minprot_ds.options import option

# Padded tokens per batch when --max-tokens is not given, by the device the job runs on: GPUs take the jobs'
# DEFAULT_MAX_TOKENS; a CPU is faster with smaller batches (measured with benchmarks/inference.py: figures,
# command, machine and date in docs/predict-embed.md, "The default --max-tokens follows the device"). The one
# place this default is decided.
MAX_TOKENS_BY_DEVICE = {"cpu": 1024, "cuda": DEFAULT_MAX_TOKENS}
DEFAULT_CHUNK = 1000
DEFAULT_CHUNK_PER_RESIDUE = 100  # L x H matrices: a chunk of 1000 ProtBert proteins would hold ~1.6 GB


@dataclasses.dataclass(kw_only=True)
class InferenceOptions:
    """What predict and embed share: the input, batching, long proteins, precision, resumable chunks, MLflow."""

    command: ClassVar[str]
    model: Path = option(help="the model folder")
    fasta: Path = option(help="input FASTA, plain or .gz (read as a stream)")
    out: Path = option(help="the output file (its suffix picks the format)")
    max_tokens: Optional[int] = option(
        None,
        "padded tokens per batch (rows x (longest + 2)); results do not depend on it (default: "
        f"{MAX_TOKENS_BY_DEVICE['cpu']} on CPU, {MAX_TOKENS_BY_DEVICE['cuda']} on GPUs, the faster there)",
        min=1,
    )
    window: Optional[int] = option(
        None, "residues per window for long proteins (default: the fine-tuned model's, else 512)", min=1
    )
    stride: Optional[int] = option(None, "residues between window starts (default: the model's, else 256)", min=1)
    long: str = option(
        "window",
        "proteins longer than --window: window (overlapping windows, stitched) | truncate "
        "(first --window residues; counted) | skip (listed as failures)",
    )
    precision: str = option(
        "auto", "auto (bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU) | fp32 | fp16 | bf16"
    )
    dedupe_ids: bool = option(False, "rename repeated ids id_2, id_3, ... instead of refusing the file")
    chunk_records: Optional[int] = option(
        None,
        f"input records per resumable chunk of OUT.parts/ (default "
        f"{DEFAULT_CHUNK}; {DEFAULT_CHUNK_PER_RESIDUE} for per-residue outputs)",
        min=1,
    )
    shard: Optional[str] = option(
        None, "i/N: compute only this machine's share; then `minprot merge` the parts folders"
    )
    mlflow: bool = option(False, "log the run to MLflow (tagged with the fine-tune run that made the model)")
    tracking_uri: Optional[str] = option(None, "MLflow store (default: SQLite beside --out)")
    overwrite: bool = option(
        False, "replace an existing --out that this command did not make with the same inputs", log=False
    )
    progress: bool = option(True, "show the progress bar", log=False)
    experiment: str = option("minprot-predict", cli=False)


@dataclasses.dataclass(kw_only=True)
class PredictOptions(InferenceOptions):
    """Score every protein of a FASTA with a fine-tuned model: one row per input record, in input order (a failed
    record with an empty probability and its reason in the `status` column)."""

    command: ClassVar[str] = "predict"
    model: Path = option(help="a fine-tune's model/ folder (it carries its task, head and threshold)")
    out: Path = option(help="dna-binding/membrane: .tsv or .parquet; q3: .parquet, .ss3 or .tsv (per residue)")
    threshold: Optional[float] = option(
        None, "probability for the positive label (default: the model's)", min=0.0, max=1.0
    )


@dataclasses.dataclass(kw_only=True)
class EmbedOptions(InferenceOptions):
    """Embed every protein of a FASTA with an encoder's hidden states, in input order."""

    command: ClassVar[str] = "embed"
    model: Path = option(help="a Hugging Face BERT folder: teacher, exported student or a fine-tune's model/")
    out: Path = option(
        help=".h5 (bio_embeddings layout: a dataset per protein, attribute original_id), .npz or .parquet"
    )
    pooling: str = option(
        "mean",
        "per-protein vector: mean over residues (specials and padding excluded) | cls. The "
        "default is mean here and cls for `minprot finetune --pooling`",
        deprecated=("--pool",),
    )
    per_residue: bool = option(False, "store L x H per protein instead of one vector")
    layers: str = option("-1", "comma-separated hidden states (0 = embeddings, -1 = last), concatenated")
    half: bool = option(False, "store fp16")
    window: Optional[int] = option(
        None, "residues per window for long proteins (default: the model's: ProtBert 512, ESM-2 1,022)", min=1
    )
    stride: Optional[int] = option(None, "residues between window starts (default: half the window)", min=1)
    mlflow: bool = option(False, "log the run to MLflow (its settings, fingerprints, speed and counts)")


def default_max_tokens(device: str) -> int:
    """--max-tokens when not given, for a device type ("cpu", "cuda"; others take the GPUs' budget)."""
    return MAX_TOKENS_BY_DEVICE.get(device, DEFAULT_MAX_TOKENS)
