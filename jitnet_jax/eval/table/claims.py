"""The paper's claims checked on a table: online against label hold and flow at no more teacher frames,
against the stronger offline oracle, and the online settings' accuracy / teacher-fraction front."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jitnet_jax.eval.table.methods import Method


def claims(results: dict[str, Any], ms: Sequence[Method], ov: dict[str, Any]) -> dict[str, Any]:
    """The paper's claims checked on this table.

    * ``vs_<baseline>`` for label hold δ8 and flow δ16: the most accurate online setting (overall) whose
      overall teacher fraction is at most the baseline's, and whether its mIoU is higher.
    * ``vs_oracle``: the most accurate online setting (overall) against the stronger oracle of each stream
      (``oracle`` / ``oracle_cv``), and on how many streams it wins.
    * ``front``: the online settings not dominated in (higher mIoU, lower teacher fraction), overall.
    Online settings must cover every stream of the table to be considered.
    """
    streams = list(results["streams"])
    online = [
        m.name
        for m in ms
        if m.kind == "online"
        and m.name in ov
        and all(m.name in results["streams"][st]["methods"] for st in streams)
    ]
    out: dict[str, Any] = {"online_settings": online}
    for base in ("hold_d8", "flow_d16"):
        if base not in ov:
            continue
        b = ov[base]
        ok = [n for n in online if ov[n]["teacher_fraction"] <= b["teacher_fraction"]]
        best = max(ok, key=lambda n: ov[n]["miou"], default=None)
        out[f"vs_{base}"] = {
            "baseline": {"miou": b["miou"], "teacher_fraction": b["teacher_fraction"]},
            "best_online": best,
            "online": {"miou": ov[best]["miou"], "teacher_fraction": ov[best]["teacher_fraction"]}
            if best
            else None,
            "beats": bool(best and ov[best]["miou"] > b["miou"]),
        }
    oracles = [m.name for m in ms if m.kind == "oracle"]
    if online and oracles:
        best = max(online, key=lambda n: ov[n]["miou"])
        per = {}
        for st in streams:
            meths = results["streams"][st]["methods"]
            have = [o for o in oracles if o in meths]
            if not have:
                continue
            strongest = max(have, key=lambda o: meths[o]["summary"]["miou"])
            mine = meths[best]["summary"]["miou"]
            theirs = meths[strongest]["summary"]["miou"]
            per[st] = {"online": mine, "oracle": strongest, "oracle_miou": theirs, "wins": mine > theirs}
        out["vs_oracle"] = {"best_online": best, "streams": per, "wins": sum(v["wins"] for v in per.values())}
    front = [
        n
        for n in online
        if not any(
            ov[o]["miou"] >= ov[n]["miou"]
            and ov[o]["teacher_fraction"] <= ov[n]["teacher_fraction"]
            and (ov[o]["miou"], ov[o]["teacher_fraction"]) != (ov[n]["miou"], ov[n]["teacher_fraction"])
            for o in online
        )
    ]
    out["front"] = sorted(front, key=lambda n: ov[n]["teacher_fraction"])
    return out


def claims_markdown(c: dict[str, Any], ov: dict[str, Any]) -> str:
    """``claims`` as a short markdown list."""
    lines = []
    for base, label in (("hold_d8", "label hold δ8"), ("flow_d16", "flow δ16")):
        v = c.get(f"vs_{base}")
        if v is None:
            continue
        b = v["baseline"]
        if v["best_online"] is None:
            lines.append(
                f"- vs {label} ({b['miou']:.3f} at {100 * b['teacher_fraction']:.1f}% teacher): no online "
                "setting of this table uses no more teacher frames"
            )
            continue
        o = v["online"]
        verdict = "beats" if v["beats"] else "does NOT beat"
        lines.append(
            f"- vs {label} ({b['miou']:.3f} at {100 * b['teacher_fraction']:.1f}% teacher): `{v['best_online']}` "
            f"({o['miou']:.3f} at {100 * o['teacher_fraction']:.1f}%) {verdict} it"
        )
    v = c.get("vs_oracle")
    if v is not None:
        detail = ", ".join(
            f"{st} {d['online']:.3f} vs {d['oracle_miou']:.3f} ({d['oracle']})"
            for st, d in v["streams"].items()
        )
        lines.append(
            f"- most accurate online setting `{v['best_online']}` vs the stronger oracle: wins on {v['wins']} of "
            f"{len(v['streams'])} streams ({detail})"
        )
    if c.get("front"):
        pts = ", ".join(
            f"`{n}` {ov[n]['miou']:.3f} @ {100 * ov[n]['teacher_fraction']:.1f}%" for n in c["front"]
        )
        lines.append(f"- online front (mIoU @ teacher %, overall): {pts}")
    return "\n".join(lines) + "\n" if lines else ""


def speed_claims(
    ov: dict[str, Any], ms: Sequence[Method], speedups: dict[str, float]
) -> dict[str, Any] | None:
    """Online against flow δ16 on the accuracy-speedup front under one cost model.

    Args:
      ov: the Overall row (``miou`` per method).
      ms: the table's methods.
      speedups: overall speedup of each method under the model.
    Returns:
      None without ``flow_d16`` or online settings; else ``{"flow_d16": {"miou", "speedup"},
      "as_accurate_fastest"`` (the fastest online setting at least as accurate, or None),
      ``"as_fast_most_accurate"`` (the most accurate online setting at least as fast, or None),
      ``"fastest_online"``, ``"answer"`` (an online setting at least as accurate *and* as fast exists) and
      ``"front"`` (online, label hold and flow columns not dominated in (higher mIoU, higher speedup),
      by speedup)``}``; each setting as ``{"name", "miou", "speedup"}``.
    """
    online = [m.name for m in ms if m.kind == "online" and m.name in ov and m.name in speedups]
    if "flow_d16" not in ov or "flow_d16" not in speedups or not online:
        return None
    fm, fs = ov["flow_d16"]["miou"], speedups["flow_d16"]

    def pt(n: str | None) -> dict[str, Any] | None:
        return None if n is None else {"name": n, "miou": ov[n]["miou"], "speedup": speedups[n]}

    accurate = [n for n in online if ov[n]["miou"] >= fm]
    fast = [n for n in online if speedups[n] >= fs]
    pool = [
        m.name for m in ms if m.name in speedups and m.name in ov and m.kind in ("online", "hold", "flow")
    ]
    front = [
        n
        for n in pool
        if not any(
            ov[o]["miou"] >= ov[n]["miou"]
            and speedups[o] >= speedups[n]
            and (ov[o]["miou"], speedups[o]) != (ov[n]["miou"], speedups[n])
            for o in pool
        )
    ]
    return {
        "flow_d16": {"miou": fm, "speedup": fs},
        "as_accurate_fastest": pt(max(accurate, key=lambda n: speedups[n], default=None)),
        "as_fast_most_accurate": pt(max(fast, key=lambda n: ov[n]["miou"], default=None)),
        "fastest_online": pt(max(online, key=lambda n: speedups[n])),
        "answer": any(n in fast for n in accurate),
        "front": [pt(n) for n in sorted(front, key=lambda n: speedups[n])],
    }


def speed_claims_markdown(c: dict[str, Any] | None, model: str) -> str:
    """One markdown bullet of :func:`speed_claims` under ``model`` (e.g. "the paper's V100 costs")."""
    if c is None:
        return ""

    def fmt(p: dict[str, Any] | None) -> str:
        return "none" if p is None else f"`{p['name']}` {p['miou']:.3f} at {p['speedup']:.1f}x"

    f = c["flow_d16"]
    verdict = "YES" if c["answer"] else "NO"
    front = ", ".join(fmt(p) for p in c["front"])
    return (
        f"- under {model}: is an online setting at least as accurate as flow δ16 ({f['miou']:.3f} at "
        f"{f['speedup']:.1f}x) and at least as fast? **{verdict}**. Fastest online setting at least as "
        f"accurate: {fmt(c['as_accurate_fastest'])}; most accurate at least as fast: "
        f"{fmt(c['as_fast_most_accurate'])}; fastest online: {fmt(c['fastest_online'])}. Front (mIoU, "
        f"speedup; online, hold, flow): {front}\n"
    )
