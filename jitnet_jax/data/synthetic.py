"""A procedurally generated video stream with exact labels: the default stream of ``experiments.stream``.

The stream stands in for "a camera + an expensive teacher" on a machine with no data: every frame is a
pure function of ``(seed, frame index)`` so that chunks can be generated lazily, in any order, and
random access by ``start`` gives exactly the frames of sequential generation.

Scene model (all sizes scale with the frame height):

* **Segments.** Scene cuts (``cuts``, by default the middle of the stream) split the stream into
  segments. Each segment has its own periodic background texture (smooth noise mapped through a
  palette, plus a distractor pattern: stripes, tiles or camouflage blobs), its own palette, camera
  motion, object colours per class, class mix and traffic density. Objects never survive a cut.
* **Camera.** The background is sampled from the (tileable) texture with a slow pan and a slow
  zoom oscillation; global lighting drifts (overall gain and colour temperature) and a soft shadow
  band sweeps across the frame. Lighting also applies to the objects. Small fixed sensor noise.
* **Objects.** Three classes of distinct shape and texture: ``disc`` (circles with concentric
  rings, floating and bobbing), ``car`` (rounded rectangles with horizontal stripes and two dark
  wheels, driving fast along the lower half) and ``walker`` (tall checkered ellipse with a head,
  walking slowly with a gait bob). Objects enter at one side and leave at the other; objects are
  drawn far-to-near (cars/walkers by ground position, discs by their own depth) so that nearer
  objects occlude farther ones, and the label of a pixel is its visible (front) object.
* **Teacher.** Labels are exact. The region map is ``REGION_BOX`` (2) inside the bounding box of every
  visible object (the box of its *visible* pixels, dilated by 15% of its size on each side, like the
  paper's weighting by the teacher's detection boxes) and ``REGION_BACKGROUND`` (1) elsewhere; the
  run's ``fg_weight``/``bg_weight`` weight the two regions.

Per-object parameters of a segment are drawn in one go from ``np.random.default_rng((seed, s, ...))``
(a few kB per segment), so nothing depends on the order in which frames are generated.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np

from jitnet_jax.data.types import REGION_BACKGROUND, REGION_BOX, Chunk, StreamInfo, pad_chunk

CLASS_NAMES = ("background", "disc", "car", "walker")
DISC, CAR, WALKER = 1, 2, 3
_STYLES = ("stripes", "tiles", "blobs")
# Speed range per class, px / frame for a 180-px-high frame.
_SPEED = {DISC: (0.8, 2.0), CAR: (1.5, 3.5), WALKER: (0.6, 1.3)}

#: Bump when a change to the generator changes any frame, label or region map (runs record it).
GENERATOR_VERSION = 1

# Stream-level ids mixed into the seed sequence of each random draw, so draws never collide.
_KEY_SEGMENT, _KEY_OBJECTS, _KEY_NOISE = 1, 2, 3


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB. Inputs float ``[...]`` in [0, 1] (hue wraps); returns float32 ``[..., 3]`` in [0, 1]."""
    h = np.mod(np.asarray(h, np.float64), 1.0)
    s = np.asarray(s, np.float64)
    v = np.asarray(v, np.float64)
    k = np.mod(np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0, 6.0)
    rgb = v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cutoff: float) -> np.ndarray:
    """Periodic smooth noise, float32 ``[size, size]`` rescaled to [0, 1].

    White noise low-pass filtered in the Fourier domain with a Gaussian of ``cutoff`` cycles per
    texture; being built from a DFT it tiles seamlessly, so the camera can pan forever.
    """
    white = rng.standard_normal((size, size))
    f = np.fft.rfft2(white)
    ky = np.fft.fftfreq(size) * size
    kx = np.fft.rfftfreq(size) * size
    f *= np.exp(-(ky[:, None] ** 2 + kx[None, :] ** 2) / (2.0 * cutoff**2))
    n = np.fft.irfft2(f, s=(size, size))
    n -= n.min()
    n /= max(float(n.max()), 1e-12)
    return n.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Objects:
    """Parameters of all objects of one segment, as arrays ``[N]`` sorted by spawn time ``t0``."""

    cls: np.ndarray  # int, 1..3
    t0: np.ndarray  # float, spawn frame (absolute); the object is off-screen at t0
    duration: np.ndarray  # float, frames until it has left the frame
    x0: np.ndarray  # float, centre x at t0
    y0: np.ndarray  # float, centre y at t0
    vx: np.ndarray  # float, px / frame
    vy: np.ndarray  # float, px / frame
    a: np.ndarray  # float, half width (px)
    b: np.ndarray  # float, half height (px)
    depth: np.ndarray  # float in [0, 1]; discs only (cars/walkers use their ground position)
    bob_amp: np.ndarray  # float, px
    bob_period: np.ndarray  # float, frames
    phase: np.ndarray  # float in [0, 1)
    freq: np.ndarray  # float, rings / stripes / checks per object
    color1: np.ndarray  # float32 [N, 3] in [0, 255]
    color2: np.ndarray  # float32 [N, 3] in [0, 255]
    max_duration: float


@dataclasses.dataclass(frozen=True)
class _Segment:
    """Everything constant within one segment (between two scene cuts)."""

    index: int
    start: int
    stop: int
    texture: np.ndarray  # float32 [S, S, 3] in [0, 255], periodic
    pan_v: tuple[float, float]  # texture px / frame (y, x)
    pan_amp: tuple[float, float]
    pan_period: float
    pan_origin: tuple[float, float]
    zoom_amp: float
    zoom_period: float
    zoom_phase: float
    light_period: float
    light_phase: float
    light_amp: float
    tint_period: float
    tint_phase: np.ndarray  # [3]
    shadow_period: float
    shadow_depth: float
    objects: _Objects


class SyntheticStream:
    """Deterministic, lazily generated synthetic stream implementing :class:`~jitnet_jax.data.types.StreamSource`.

    Args:
      num_frames: stream length.
      height, width: frame size (the student's resolution).
      seed: everything is a pure function of ``(seed, frame index)``.
      cuts: frame indices where a scene cut happens (background, palette, camera, object colours
        and traffic change); ``None`` -> one cut at ``num_frames // 2``; ``()`` -> no cut.
      density: multiplies the object spawn rate (1.0 -> about 4-10 objects on screen).
      noise: standard deviation of the (fixed-pattern, per-frame cycling) sensor noise, grey levels.
      fps: nominal frame rate.
      name: ``info.name``.
    """

    def __init__(
        self,
        num_frames: int = 1500,
        height: int = 180,
        width: int = 320,
        seed: int = 0,
        cuts: Sequence[int] | None = None,
        density: float = 1.0,
        noise: float = 3.0,
        fps: float = 30.0,
        name: str = "synthetic",
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if height < 16 or width < 16:
            raise ValueError(f"frame must be at least 16x16, got {height}x{width}")
        if density <= 0:
            raise ValueError(f"density must be > 0, got {density}")
        if cuts is None:
            cuts = (num_frames // 2,) if num_frames >= 2 else ()
        cuts = tuple(int(c) for c in cuts)
        if list(cuts) != sorted(set(cuts)) or any(not 0 < c < num_frames for c in cuts):
            raise ValueError(
                f"cuts must be strictly increasing frame indices in (0, {num_frames}), got {cuts}"
            )
        self.num_frames = int(num_frames)
        self.height = int(height)
        self.width = int(width)
        self.seed = int(seed)
        self.cuts = cuts
        self.density = float(density)
        self.noise = float(noise)
        self.info = StreamInfo(
            name=name,
            num_frames=self.num_frames,
            height=self.height,
            width=self.width,
            fps=float(fps),
            class_names=CLASS_NAMES,
            teacher="synthetic-exact",
        )
        self._bounds = (0, *cuts, self.num_frames)
        self._unit = self.height / 180.0  # all sizes and speeds are given for a 180-px-high frame
        self._tex_size = max(256, 1 << math.ceil(math.log2(1.6 * max(height, width))))
        self._cache: collections.OrderedDict[int, _Segment] = collections.OrderedDict()
        self._lock = threading.Lock()  # the cache may be shared with a prefetching thread
        self._noise_bank: np.ndarray | None = None
        # Static sampling grids (frame pixel offsets from the centre).
        self._gy = np.arange(self.height, dtype=np.float32) - self.height / 2.0
        self._gx = np.arange(self.width, dtype=np.float32) - self.width / 2.0
        self._px = np.arange(self.width, dtype=np.float32) + 0.5  # pixel centres
        self._py = np.arange(self.height, dtype=np.float32) + 0.5
        self._xnorm = (np.arange(self.width, dtype=np.float32) + 0.5) / self.width

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (
            f"SyntheticStream(num_frames={self.num_frames}, height={self.height}, width={self.width}, "
            f"seed={self.seed}, cuts={self.cuts})"
        )

    @property
    def identity(self) -> str:
        """The generator version and every parameter that shapes the frames/labels (a run's fingerprint)."""
        return (
            f"synthetic-v{GENERATOR_VERSION}:n={self.num_frames},h={self.height},w={self.width},"
            f"seed={self.seed},cuts={list(self.cuts)},density={self.density},noise={self.noise}"
        )

    # ------------------------------------------------------------------ public API

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """Yield :class:`Chunk` s of ``chunk_size`` frames from ``start`` on; the last one is padded.

        Lazy: one chunk is generated per ``next()``; memory does not grow with the stream length.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if not 0 <= start < self.num_frames:
            raise ValueError(f"start must be in [0, {self.num_frames}), got {start}")
        for s in range(start, self.num_frames, chunk_size):
            frames, labels, regions = self.clip(s, min(s + chunk_size, self.num_frames))
            yield pad_chunk(frames, labels, regions, chunk_size, s)

    def clip(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames ``start..stop-1``: uint8 ``[T, H, W, 3]``, labels uint8 ``[T, H, W]``, region map uint8 ``[T, H, W]``."""
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"need 0 <= start < stop <= {self.num_frames}, got {start}, {stop}")
        n = stop - start
        frames = np.empty((n, self.height, self.width, 3), np.uint8)
        labels = np.empty((n, self.height, self.width), np.uint8)
        regions = np.empty((n, self.height, self.width), np.uint8)
        for i in range(n):
            frames[i], labels[i], regions[i] = self.render(start + i)
        return frames, labels, regions

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``t``: uint8 ``[H, W, 3]``, label uint8 ``[H, W]``, region map uint8 ``[H, W]`` (1 / 2 in a box)."""
        t = int(t)
        if not 0 <= t < self.num_frames:
            raise ValueError(f"frame index must be in [0, {self.num_frames}), got {t}")
        seg = self._segment(self.segment_of(t))
        tau = float(t - seg.start)
        frame = self._background(seg, tau)
        label = np.zeros((self.height, self.width), np.uint8)
        inst = np.full((self.height, self.width), -1, np.int32)
        boxes = self._draw_objects(seg, t, frame, label, inst)
        weight = np.full((self.height, self.width), REGION_BACKGROUND, np.uint8)
        for i, (y0, y1, x0, x1) in boxes:
            vis = inst[y0:y1, x0:x1] == i
            rows = np.flatnonzero(vis.any(axis=1))
            if rows.size == 0:
                continue  # fully occluded
            cols = np.flatnonzero(vis.any(axis=0))
            by0, by1 = y0 + rows[0], y0 + rows[-1] + 1
            bx0, bx1 = x0 + cols[0], x0 + cols[-1] + 1
            dy, dx = 0.15 * (by1 - by0), 0.15 * (bx1 - bx0)
            weight[
                max(0, math.floor(by0 - dy)) : min(self.height, math.ceil(by1 + dy)),
                max(0, math.floor(bx0 - dx)) : min(self.width, math.ceil(bx1 + dx)),
            ] = REGION_BOX
        self._light(seg, tau, frame)
        if self.noise > 0:
            frame += self._noise()[t % len(self._noise())]
        np.clip(frame, 0.0, 255.0, out=frame)
        return frame.astype(np.uint8), label, weight

    def segment_of(self, t: int) -> int:
        """Index of the segment (0 before the first cut) containing frame ``t``."""
        return int(np.searchsorted(np.asarray(self.cuts, np.int64), t, side="right"))

    # ------------------------------------------------------------------ segments

    def _segment(self, s: int) -> _Segment:
        """Segment ``s``, built on first use; the 3 most recently used segments are cached (~3 MB each)."""
        with self._lock:
            seg = self._cache.get(s)
            if seg is None:
                seg = self._make_segment(s)
                self._cache[s] = seg
                while len(self._cache) > 3:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(s)
            return seg

    def _make_segment(self, s: int) -> _Segment:
        rng = np.random.default_rng((self.seed, _KEY_SEGMENT, s))
        size, u = self._tex_size, self._unit
        # Palette: the base hue turns by 1/golden-ratio^2 of the wheel (~137 deg) at every cut and the
        # distractor style cycles, so consecutive scenes always differ clearly.
        offset = np.random.default_rng((self.seed, _KEY_SEGMENT)).uniform(0.0, 1.0)
        base = (offset + 0.381966 * s + rng.uniform(-0.03, 0.03)) % 1.0
        hues = base + rng.uniform(-0.08, 0.08, 3) + np.array([0.0, 0.08, 0.5])
        sats = rng.uniform(0.15, 0.65, 3)
        vals = np.sort(rng.uniform(0.25, 0.9, 3))
        if vals[2] - vals[0] < 0.35:
            vals = np.array([0.3, 0.55, 0.85])
        palette = _hsv_to_rgb(hues, sats, vals) * 255.0  # [3, 3]
        low = _smooth_noise(rng, size, cutoff=rng.uniform(2.0, 5.0))
        mid = _smooth_noise(rng, size, cutoff=rng.uniform(10.0, 20.0))
        # Map the low-frequency noise through the 3-colour gradient.
        x = low * 2.0
        w0 = np.clip(1.0 - x, 0.0, 1.0)
        w2 = np.clip(x - 1.0, 0.0, 1.0)
        w1 = 1.0 - w0 - w2
        tex = w0[..., None] * palette[0] + w1[..., None] * palette[1] + w2[..., None] * palette[2]
        yy, xx = np.meshgrid(
            np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij"
        )
        style = _STYLES[(int(offset * 3) + s) % len(_STYLES)]
        if style == "stripes":
            ky, kx = int(rng.integers(-12, 13)), int(rng.integers(8, 30))
            pat = np.sin(2.0 * np.pi * (ky * yy + kx * xx) / size)
            gain = 1.0 + 0.22 * pat * (0.3 + 0.7 * mid)
            tex *= gain[..., None]
        elif style == "tiles":
            n_tiles = int(rng.choice([8, 16]))
            tile = size // n_tiles
            ty, tx = (yy // tile).astype(np.int64), (xx // tile).astype(np.int64)
            shift = (ty % 2) * (tile // 2)  # brick bond
            tx = ((xx + shift) // tile).astype(np.int64)
            shade = rng.uniform(0.8, 1.15, (n_tiles, n_tiles + 1)).astype(np.float32)
            tex *= shade[ty % n_tiles, tx % (n_tiles + 1)][..., None]
            mortar = ((yy % tile) < 2) | (((xx + shift) % tile) < 2)
            tex[mortar] *= 0.55
        else:  # blobs: camouflage patches of an extra colour
            extra = (
                _hsv_to_rgb(base + rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.8))
                * 255.0
            )
            m = np.clip((mid - 0.55) * 8.0, 0.0, 1.0)[..., None]
            tex = tex * (1.0 - 0.8 * m) + extra * (0.8 * m)
        # Fine grain everywhere so the background is never flat.
        tex *= (0.92 + 0.16 * _smooth_noise(rng, size, cutoff=size / 6.0))[..., None]
        texture = np.clip(tex, 0.0, 255.0).astype(np.float32)

        start, stop = self._bounds[s], self._bounds[s + 1]
        return _Segment(
            index=s,
            start=start,
            stop=stop,
            texture=texture,
            pan_v=(
                float(rng.uniform(-0.15, 0.15) * u),
                float(rng.choice([-1, 1]) * rng.uniform(0.2, 0.8) * u),
            ),
            pan_amp=(float(rng.uniform(0, 10) * u), float(rng.uniform(0, 30) * u)),
            pan_period=float(rng.uniform(300, 900)),
            pan_origin=(float(rng.uniform(0, size)), float(rng.uniform(0, size))),
            zoom_amp=float(rng.uniform(0.05, 0.15)),
            zoom_period=float(rng.uniform(400, 1200)),
            zoom_phase=float(rng.uniform(0, 2 * np.pi)),
            light_period=float(rng.uniform(250, 800)),
            light_phase=float(rng.uniform(0, 2 * np.pi)),
            light_amp=float(rng.uniform(0.1, 0.25)),
            tint_period=float(rng.uniform(300, 900)),
            tint_phase=rng.uniform(0, 2 * np.pi, 3),
            shadow_period=float(rng.uniform(200, 600)),
            shadow_depth=float(rng.uniform(0.1, 0.35)),
            objects=self._make_objects(s, start, stop),
        )

    def _make_objects(self, s: int, start: int, stop: int) -> _Objects:
        """All objects of segment ``s``, including a pre-roll so the scene starts populated."""
        rng = np.random.default_rng((self.seed, _KEY_OBJECTS, s))
        u, H, W = self._unit, self.height, self.width
        interval = rng.uniform(14.0, 24.0) / self.density
        # Upper bound of any object's on-screen time (slowest walker, widest car) for the pre-roll.
        max_duration = (W + 2 * 80.0 * u) / (_SPEED[WALKER][0] * u)
        k = np.arange(-math.ceil(max_duration / interval), math.ceil((stop - start) / interval))
        n = k.size
        t0 = start + (k + 0.9 * rng.uniform(0.0, 1.0, n)) * interval  # strictly increasing
        # Busy and quiet periods: spawn acceptance oscillates.
        busy_period, busy_phase = rng.uniform(300, 700), rng.uniform(0, 2 * np.pi)
        p_accept = 0.25 + 0.75 * (0.5 + 0.5 * np.sin(2 * np.pi * (t0 - start) / busy_period + busy_phase))
        keep = rng.uniform(0, 1, n) < p_accept
        # Class mix of this scene (share of objects on screen): mostly uniform, partly random so all
        # classes show up. Slow classes stay longer, so spawn probabilities are presence x speed.
        presence = 0.6 / 3 + 0.4 * rng.dirichlet([2.0, 2.0, 2.0])
        spawn = presence * np.array([sum(_SPEED[c]) for c in (DISC, CAR, WALKER)])
        # Low-discrepancy (golden-ratio) class sequence: the mix is met closely even in short scenes.
        golden = np.mod(rng.uniform(0.0, 1.0) + 0.6180339887 * np.arange(n), 1.0)
        cls = 1 + np.searchsorted(np.cumsum(spawn / spawn.sum())[:-1], golden, side="right")
        direction = rng.choice([-1.0, 1.0], size=n)
        r = rng.uniform(0.0, 1.0, (8, n))  # generic uniforms, one row per attribute
        ground = 0.45 + 0.5 * r[0]  # ground line as a fraction of H for cars/walkers
        persp = 0.7 + 0.6 * (ground - 0.45) / 0.5  # nearer (lower) -> bigger

        a = np.where(cls == DISC, 10 + 14 * r[1], np.where(cls == CAR, 26 + 16 * r[1], 6 + 4 * r[1]))
        b = np.where(cls == DISC, 0.0, np.where(cls == CAR, 11 + 5 * r[2], 18 + 10 * r[2]))
        scale = np.where(cls == DISC, 1.0, persp) * u
        a = a * scale
        b = np.where(cls == DISC, a, b * scale)
        lo_v = np.array([0.0] + [_SPEED[c][0] for c in (DISC, CAR, WALKER)])[cls]
        hi_v = np.array([0.0] + [_SPEED[c][1] for c in (DISC, CAR, WALKER)])[cls]
        speed = (lo_v + (hi_v - lo_v) * r[3]) * u
        vx = direction * speed
        vy = np.where(cls == DISC, (r[4] - 0.5) * 0.6 * u, 0.0)
        # Centre y: discs anywhere, cars/walkers stand on their ground line.
        y_disc = (0.12 + 0.76 * r[5]) * H
        y0 = np.where(cls == DISC, y_disc, ground * H - b)
        ext = a * 1.3  # horizontal half extent incl. wheels / margins
        x0 = np.where(direction > 0, -ext, W + ext)
        duration = (W + 2 * ext) / speed
        bob_amp = np.where(cls == DISC, 15 * r[6], np.where(cls == WALKER, 1.5, 0.3)) * u
        bob_period = np.where(
            cls == DISC, 40 + 50 * r[7], np.where(cls == WALKER, 16 + 8 * r[7], 9 + 4 * r[7])
        )
        freq = np.where(cls == DISC, 2 + 2 * r[6], np.where(cls == CAR, 3 + 2 * r[7], 2 + r[6]))
        freq = np.round(freq)

        # Colours: per-scene base hue per class, jittered per object; two tones with value contrast.
        class_hue = rng.uniform(0, 1, 4)
        h1 = class_hue[cls] + rng.normal(0, 0.06, n)
        s1 = rng.uniform(0.35, 0.9, n)
        v1 = rng.uniform(0.55, 0.95, n)
        h2 = h1 + rng.uniform(-0.15, 0.15, n) + np.where(rng.uniform(0, 1, n) < 0.4, 0.5, 0.0)
        v2 = np.clip(v1 - rng.uniform(0.3, 0.5, n), 0.05, 1.0)
        color1 = _hsv_to_rgb(h1, s1, v1) * 255.0
        color2 = _hsv_to_rgb(h2, rng.uniform(0.3, 0.9, n), v2) * 255.0
        depth = rng.uniform(0, 1, n)
        phase = rng.uniform(0, 1, n)
        sel = np.flatnonzero(keep)
        f = np.float64
        return _Objects(
            cls=cls[sel].astype(np.int64),
            t0=t0[sel].astype(f),
            duration=duration[sel].astype(f),
            x0=x0[sel].astype(f),
            y0=y0[sel].astype(f),
            vx=vx[sel].astype(f),
            vy=vy[sel].astype(f),
            a=a[sel].astype(f),
            b=b[sel].astype(f),
            depth=depth[sel].astype(f),
            bob_amp=bob_amp[sel].astype(f),
            bob_period=bob_period[sel].astype(f),
            phase=phase[sel].astype(f),
            freq=freq[sel].astype(f),
            color1=color1[sel].astype(np.float32),
            color2=color2[sel].astype(np.float32),
            max_duration=float(duration[sel].max(initial=0.0)),
        )

    # ------------------------------------------------------------------ rendering

    def _background(self, seg: _Segment, tau: float) -> np.ndarray:
        """float32 ``[H, W, 3]``: the segment texture seen through the panning / zooming camera."""
        size = self._tex_size
        zoom = 1.0 + seg.zoom_amp * math.sin(2 * math.pi * tau / seg.zoom_period + seg.zoom_phase)
        wob = math.sin(2 * math.pi * tau / seg.pan_period)
        cy = seg.pan_origin[0] + seg.pan_v[0] * tau + seg.pan_amp[0] * wob
        cx = seg.pan_origin[1] + seg.pan_v[1] * tau + seg.pan_amp[1] * wob
        rows = np.floor(cy + self._gy / zoom).astype(np.int64) % size
        cols = np.floor(cx + self._gx / zoom).astype(np.int64) % size
        return seg.texture.take(rows, axis=0).take(cols, axis=1)

    def _light(self, seg: _Segment, tau: float, frame: np.ndarray) -> None:
        """In place: global gain drift, colour-temperature drift and a sweeping soft shadow band."""
        gain = 1.0 + seg.light_amp * math.sin(2 * math.pi * tau / seg.light_period + seg.light_phase)
        tint = 1.0 + 0.08 * np.sin(2 * np.pi * tau / seg.tint_period + seg.tint_phase)
        centre = (tau / seg.shadow_period) % 1.6 - 0.3  # sweeps left to right, then restarts
        shadow = 1.0 - seg.shadow_depth * np.exp(-(((self._xnorm - centre) / 0.12) ** 2))
        frame *= (gain * shadow[:, None] * tint[None, :]).astype(np.float32)

    def _noise(self) -> np.ndarray:
        """float32 ``[8, H, W, 3]`` bank of fixed sensor-noise frames (frame ``t`` uses ``t % 8``)."""
        if self._noise_bank is None:
            rng = np.random.default_rng((self.seed, _KEY_NOISE))
            shape = (8, self.height, self.width, 3)
            self._noise_bank = (rng.standard_normal(shape, dtype=np.float32) * self.noise).astype(np.float32)
        return self._noise_bank

    def _draw_objects(
        self, seg: _Segment, t: int, frame: np.ndarray, label: np.ndarray, inst: np.ndarray
    ) -> list[tuple[int, tuple[int, int, int, int]]]:
        """Paint the objects visible at ``t`` far-to-near; returns ``(object id, clipped draw box)`` pairs."""
        ob = seg.objects
        lo = int(np.searchsorted(ob.t0, t - ob.max_duration, side="left"))
        hi = int(np.searchsorted(ob.t0, t, side="right"))
        idx = np.arange(lo, hi)
        dt = t - ob.t0[idx]
        idx = idx[dt <= ob.duration[idx]]
        if idx.size == 0:
            return []
        dt = t - ob.t0[idx]
        cls = ob.cls[idx]
        bob = ob.bob_amp[idx] * np.sin(2 * np.pi * (dt / ob.bob_period[idx] + ob.phase[idx]))
        cx = ob.x0[idx] + ob.vx[idx] * dt
        cy = ob.y0[idx] + ob.vy[idx] * dt + np.where(cls == DISC, bob, -np.abs(bob))
        # Depth: discs float at their own depth; cars/walkers are ordered by where they touch the ground.
        key = np.where(cls == DISC, ob.depth[idx], (ob.y0[idx] + ob.b[idx]) / self.height)
        order = np.argsort(key, kind="stable")
        boxes = []
        for j in order:
            i = int(idx[j])
            box = self._draw_one(ob, i, float(cx[j]), float(cy[j]), float(dt[j]), frame, label, inst)
            if box is not None:
                boxes.append((i, box))
        return boxes

    def _draw_one(
        self,
        ob: _Objects,
        i: int,
        cx: float,
        cy: float,
        dt: float,
        frame: np.ndarray,
        label: np.ndarray,
        inst: np.ndarray,
    ) -> tuple[int, int, int, int] | None:
        c = int(ob.cls[i])
        a, b = float(ob.a[i]), float(ob.b[i])
        # Box (relative to the centre) covering the whole shape.
        if c == DISC:
            top, bottom, half_w = -a, a, a
        elif c == CAR:
            top, bottom, half_w = -b, 1.35 * b, a
        else:
            top, bottom, half_w = -b - 1.7 * a, b, a
        y0, y1 = max(0, math.floor(cy + top)), min(self.height, math.ceil(cy + bottom) + 1)
        x0, x1 = max(0, math.floor(cx - half_w)), min(self.width, math.ceil(cx + half_w) + 1)
        if y0 >= y1 or x0 >= x1:
            return None
        # Object-local coordinates normalised by the half sizes (1-D; 2-D only where needed).
        u = (self._px[x0:x1] - cx) * (1.0 / a)  # [w]
        v = (self._py[y0:y1] - cy) * (1.0 / b)  # [h]
        f, ph = float(ob.freq[i]), float(ob.phase[i])
        tyre = None
        if c == DISC:
            r2 = (v * v)[:, None] + u * u
            my, mx = np.nonzero(r2 <= 1.0)
            # Concentric rings (soft edged), evaluated on the object's pixels only.
            pm = np.clip(0.5 + 2.0 * np.cos(np.sqrt(r2[my, mx]) * (2 * np.pi * f) + 2 * np.pi * ph), 0.0, 1.0)
        elif c == CAR:
            rc = 0.45 * b  # corner radius (px)
            ua = np.maximum(np.abs(u) * a - (a - rc), 0.0)
            vb = np.maximum(np.abs(v) * b - (b - rc), 0.0)
            body = (vb * vb)[:, None] + ua * ua <= rc * rc
            wx = (np.abs(u) - 0.6) * (a / b)  # wheels: radius 0.38 b, centred at +-0.6 a, 0.95 b
            wy = v - 0.95
            wheels = (wy * wy)[:, None] + wx * wx <= 0.38**2
            my, mx = np.nonzero(body | wheels)
            stripes = (np.sin((v + 1.0) * (np.pi * f) + 0.3) > 0).astype(np.float32)  # horizontal bands
            pm = stripes[my]
            tyre = wheels[my, mx] & ((v[my] > 0.9) | ~body[my, mx])
        else:
            u2 = u * u
            body = (v * v)[:, None] + u2 <= 1.0
            hr = 0.8  # head radius / a, the head sits on top of the body
            hv = (v + (b + hr * a) / b) * (b / a)
            head = (hv * hv)[:, None] + u2 <= hr * hr
            my, mx = np.nonzero(body | head)
            # Checkered body (checks per half width: freq; per half height: 2 * freq); plain head.
            cu = np.floor((u + 1.0) * f + 2.0 * ph)
            cv = np.floor((v + 1.0) * (2.0 * f))
            pm = (cu[mx] + cv[my]) % 2
            pm[head[my, mx]] = 1.0
        if my.size == 0:
            return None
        c1 = ob.color1[i]
        col = c1 + (ob.color2[i] - c1) * pm.astype(np.float32)[:, None]  # two tones blended by the pattern
        if tyre is not None:
            col[tyre] = 28.0  # near-black tyres
        frame[y0:y1, x0:x1][my, mx] = col
        label[y0:y1, x0:x1][my, mx] = c
        inst[y0:y1, x0:x1][my, mx] = i
        return y0, y1, x0, x1
