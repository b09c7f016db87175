"""The caption viewer: one self-contained HTML page of a CRO run's audited captions (``racro report
OUTPUT_DIR --html``).

For the chosen steps (first, middle and last audited step by default) the page shows each prompt's image
(the thumbnail the reward saved), question and gold answer, and under it the captions sampled for it,
each with its reward, the reasoner's extracted answers and the leak / failed flags; the reward curve is
at the top. It filters by step, by reward and by flag in the page itself: no server, no network (images
and the curve are inlined as data URIs, the script is inline). The audit is streamed twice (its steps,
then the chosen steps' records), so memory stays bounded by the chosen steps, whatever the run's length.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
from pathlib import Path

THUMBNAIL = 128  # px, the longer side


def save_thumbnail(image, audit_dir: Path) -> str:
    """Save ``image`` (PIL) as a PNG thumbnail under ``audit_dir/images`` once (named by a hash of its
    pixels); returns its path relative to ``audit_dir``."""
    digest = hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()[:16]
    path = Path(audit_dir) / "images" / f"{digest}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        thumb = image.convert("RGB")
        thumb.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        thumb.save(buffer, format="PNG")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buffer.getvalue())
        tmp.replace(path)  # another rank writing the same image leaves one whole file
    return f"images/{path.name}"


def _records(audit_dir: Path):
    for path in sorted(audit_dir.glob("*.jsonl")):
        with path.open() as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def audited_steps(audit_dir: str | Path) -> list[int]:
    """The steps that have audit records, in order (streamed)."""
    return sorted({r["step"] for r in _records(Path(audit_dir)) if r.get("step") is not None})


def default_steps(steps: list[int]) -> list[int]:
    """First, middle and last.

    >>> default_steps([0, 1, 2, 3, 4]), default_steps([7])
    ([0, 2, 4], [7])
    """
    return sorted({steps[0], steps[len(steps) // 2], steps[-1]}) if steps else []


def prompt_groups(audit_dir: str | Path, steps: list[int]) -> list[dict]:
    """The chosen steps' records grouped by prompt (step, rank, image, question, gold), in audit order."""
    chosen = set(steps)
    groups: dict[tuple, dict] = {}
    for r in _records(Path(audit_dir)):
        if r.get("step") not in chosen:
            continue
        key = (r["step"], r.get("rank"), r.get("image"), r["question"], r["gold"])
        group = groups.setdefault(
            key,
            {
                "step": r["step"],
                "image": r.get("image"),
                "question": r["question"],
                "gold": r["gold"],
                "captions": [],
            },
        )
        group["captions"].append(r)
    return list(groups.values())


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode() if path.is_file() else ""


def _curve_uri(output_dir: Path) -> str:
    from .run_summary import load_log_history, reward_curve

    try:
        history = load_log_history(output_dir)
    except FileNotFoundError:
        return ""
    if not any("reward" in h for h in history):
        return ""
    buffer = io.BytesIO()
    reward_curve(history, buffer, title="mean caption reward per step")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}
.bar{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
.prompt{display:flex;gap:1em;border-bottom:1px solid #eee;padding:.8em 0}
.prompt img{width:96px;height:auto;image-rendering:pixelated;border:1px solid #ccc}
.meta{width:260px;flex:none}.step{color:#777}table{border-collapse:collapse;flex:1}
td,th{padding:.2em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #f2f2f2}
td.r1{color:#080;font-weight:600}td.r0{color:#a00}.flag{background:#fde;border-radius:3px;padding:0 .3em}
"""

_SCRIPT = """
function apply(){
  const step=document.getElementById('step').value, reward=document.getElementById('reward').value;
  let shown=0;
  document.querySelectorAll('.prompt').forEach(p=>{
    let any=false;
    p.querySelectorAll('tr.caption').forEach(row=>{
      const r=parseFloat(row.dataset.reward), flagged=row.dataset.flagged==='1';
      const ok=(step==='all'||p.dataset.step===step)&&(reward==='all'||(reward==='pos'&&r>0)||
        (reward==='zero'&&r<=0)||(reward==='flagged'&&flagged));
      row.style.display=ok?'':'none'; if(ok){any=true;shown++;}
    });
    p.style.display=any?'':'none';
  });
  document.getElementById('count').textContent=shown+' captions shown';
}
document.querySelectorAll('select').forEach(s=>s.addEventListener('change',apply));apply();
"""


def render(output_dir: str | Path, steps: list[int] | None = None) -> str:
    """The page's HTML for ``output_dir``'s audit (``steps``: default first, middle, last)."""
    output_dir = Path(output_dir)
    audit_dir = output_dir / "audit"
    if not audit_dir.is_dir():
        raise FileNotFoundError(f"{output_dir} has no audit/ folder (reward_audit_captions > 0 writes one)")
    available = audited_steps(audit_dir)
    if not available:
        raise FileNotFoundError(f"no audit records in {audit_dir}")
    missing = sorted(set(steps or []) - set(available))
    if missing:
        raise ValueError(
            f"steps {missing} have no audit records; audited steps run {available[0]}..{available[-1]}"
        )
    steps = sorted(steps) if steps else default_steps(available)
    groups = prompt_groups(audit_dir, steps)
    images: dict[str, str] = {}
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>captions: {esc(output_dir.name)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>Captions of {esc(str(output_dir))}</h1>",
    ]
    curve = _curve_uri(output_dir)
    if curve:
        parts.append(f"<img id='curve' alt='reward curve' src='{curve}'>")
    options = "".join(f"<option value='{s}'>step {s}</option>" for s in steps)
    parts.append(
        "<div class='bar'>step <select id='step'><option value='all'>all shown steps</option>"
        f"{options}</select> reward <select id='reward'><option value='all'>any</option>"
        "<option value='pos'>&gt; 0</option><option value='zero'>0</option>"
        "<option value='flagged'>leak or failed</option></select> <span id='count'></span></div>"
    )
    for g in groups:
        if g["image"] and g["image"] not in images:
            images[g["image"]] = _data_uri(audit_dir / g["image"])
        img = (
            f"<img alt='prompt image' src='{images[g['image']]}'>"
            if g["image"] and images[g["image"]]
            else "<div>(no image)</div>"
        )
        rows = []
        for c in g["captions"]:
            flags = [f for f in ("leak", "failed") if c.get(f)]
            answers = ", ".join("-" if a is None else str(a) for a in c.get("extracted") or [])
            reward = float(c["reward"])
            rows.append(
                f"<tr class='caption' data-reward='{reward}' data-flagged='{int(bool(flags))}'>"
                f"<td class='r{int(reward > 0)}'>{reward:.2f}</td><td>{esc(c['caption'])}</td>"
                f"<td>{esc(answers)}</td><td>{' '.join(f'<span class=flag>{f}</span>' for f in flags)}</td></tr>"
            )
        parts.append(
            f"<div class='prompt' data-step='{g['step']}'>{img}<div class='meta'><div class='step'>step {g['step']}</div>"
            f"<div>{esc(g['question'])}</div><div>gold: <b>{esc(str(g['gold']))}</b></div></div>"
            "<table><tr><th>reward</th><th>caption</th><th>reasoner's answer</th><th>flags</th></tr>"
            f"{''.join(rows)}</table></div>"
        )
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "".join(parts)


def write_viewer(
    output_dir: str | Path, out: str | Path | None = None, steps: list[int] | None = None
) -> Path:
    """Write the page (default ``output_dir/captions.html``); returns its path."""
    out = Path(out) if out else Path(output_dir) / "captions.html"
    out.write_text(render(output_dir, steps), encoding="utf-8")
    return out
