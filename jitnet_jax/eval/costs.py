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
    frames: int,
    teacher_frames: int,
    updates: int,
    cost: CostModel,
    frames_per_update: int = 1,
    zoo_forward: int = 0,
) -> float:
    """``300 N / (7 (N - T) + 300 T + 30 B U + 7 F)`` with the configured costs.

    ``frames_per_update`` (``B``): frames one update trains on (``OnlineConfig.replay_batch``: the
    current teacher frame plus ``B - 1`` replayed ones; 1 in the paper). ``zoo_forward`` (``F``): the
    zoo's forward passes (``OnlineConfig.zoo_size``; 0 without a zoo), each an inference.
    """
    spent = cost.infer_ms * (frames - teacher_frames + zoo_forward) + cost.teacher_ms * teacher_frames
    spent += cost.train_ms * updates * frames_per_update
    return cost.teacher_ms * frames / max(spent, 1e-9)


def student_passes(
    frames: int,
    teacher_frames: int,
    passed_checks: int,
    updates: int,
    frames_per_update: int = 1,
    zoo_forward: int = 0,
) -> dict[str, int]:
    """The student's network passes over single frames that a run computes (what the online engine
    executes, ``online.engine.teacher_updates``):

      * ``forward``: one prediction per non-teacher frame; one forward pass of the current frame per
        accuracy check (``updates + passed_checks`` checks; a failing check's forward is its update's);
        the ``B - 1`` replayed frames of each update (``B = frames_per_update``);
      * ``backward``: ``B`` per update. A check that passes runs none.
      * ``zoo_forward``: the zoo's forward passes (members scored, and per switch the failed check it
        replaced), added to ``forward``.
    """
    forward = frames - teacher_frames + updates + passed_checks + (frames_per_update - 1) * updates
    forward += zoo_forward
    return {"forward": forward, "backward": frames_per_update * updates}


def flops_speedup(
    frames: int,
    teacher_frames: int,
    passes: int,
    updates: int,
    infer_gflops: float,
    train_gflops: float,
    cost: CostModel,
    frames_per_update: int = 1,
    zoo_forward: int = 0,
) -> float:
    """Teacher on every frame against what the run computes (:func:`student_passes`): the teacher on
    teacher frames, a forward pass at ``infer_gflops`` for each student forward (predictions, accuracy
    checks, replayed frames) and ``train_gflops - infer_gflops`` (the backward and the optimiser step) for
    each backward.

    Args:
      passes: accuracy checks (``updates`` failing ones, each followed by an update, and ``passes -
        updates`` that passed the threshold, a forward pass each on the current frame only).
      train_gflops: one single-frame training step (forward, backward, update); ``frames_per_update``
        (``B``, replay) frames per update, so an update costs ``B`` of them.
      zoo_forward: the zoo's forward passes (0 without a zoo).
    """
    n = student_passes(
        frames, teacher_frames, max(passes - updates, 0), updates, frames_per_update, zoo_forward
    )
    spent = cost.teacher_gflops * teacher_frames + infer_gflops * n["forward"]
    spent += (train_gflops - infer_gflops) * n["backward"]
    return cost.teacher_gflops * frames / max(spent, 1e-9)
