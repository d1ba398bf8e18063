"""The paper's cost model and the speedup numbers reported for a run."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Per-operation costs used to compute speedups against running the teacher on every frame.

    Attributes:
      teacher_ms, infer_ms, train_ms: the paper's runtime cost model (Mask R-CNN 300 ms, JITNet inference
        7 ms, one JITNet training step 30 ms, on a V100 at 720p).
      teacher_gflops: FLOPs of one teacher run. Default: YOLOv8n-seg at 640x640, 12.6 GFLOPs
        (Ultralytics' published figure), the real teacher of ``lvs_mini``. Set it to your teacher's.
    """

    teacher_ms: float = 300.0
    infer_ms: float = 7.0
    train_ms: float = 30.0
    teacher_gflops: float = 12.6


def cost_model_speedup(
    frames: int, teacher_frames: int, updates: int, cost: CostModel, frames_per_update: int = 1
) -> float:
    """``300 N / (7 (N - T) + 300 T + 30 B U)`` with the configured costs.

    ``frames_per_update`` (``B``): frames one update trains on (``OnlineConfig.replay_batch``: the
    current teacher frame plus ``B - 1`` replayed ones; 1 in the paper).
    """
    spent = cost.infer_ms * (frames - teacher_frames) + cost.teacher_ms * teacher_frames
    spent += cost.train_ms * updates * frames_per_update
    return cost.teacher_ms * frames / max(spent, 1e-9)


def flops_speedup(
    frames: int,
    teacher_frames: int,
    passes: int,
    updates: int,
    infer_gflops: float,
    train_gflops: float,
    cost: CostModel,
    frames_per_update: int = 1,
) -> float:
    """Teacher on every frame against: student inference on non-teacher frames, the teacher on teacher
    frames, ``updates`` training steps of ``frames_per_update`` frames each (``train_gflops`` is one
    frame's step; replay trains on ``B`` frames per update), and the forward passes that only measured
    accuracy (``passes - updates``, a pass that passed the threshold and so took no update; the check is
    on the current frame only)."""
    spent = infer_gflops * (frames - teacher_frames) + cost.teacher_gflops * teacher_frames
    spent += train_gflops * updates * frames_per_update + infer_gflops * max(passes - updates, 0)
    return cost.teacher_gflops * frames / max(spent, 1e-9)
