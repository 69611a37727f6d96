"""A self-contained HTML viewer of a saved run (``visrl view RUN_DIR``).

:func:`write_viewer` writes ``index.html`` beside ``trajectories.jsonl``: a filterable list of the
trajectories, then each one turn by turn (the env's images and text, the model's reply with its
``<tool_call>``/``<answer>``/``<think>`` blocks highlighted, the reward and its terms, errors
flagged). Images are the run's PNGs by relative path; there is no network access and no external
CSS or JS. Everything the model or the env wrote is HTML-escaped, and a Content-Security-Policy
lets only the page's own filter script run, so a reply holding ``<script>`` shows as text.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import re
import sys
from pathlib import Path
from typing import Any

from agents.vlm.workbench.store import (
    StoreError,
    Turn,
    load_meta,
    load_trajectories,
    read_records,
    step_notes,
    steps_of,
    transcript,
    turns,
)

VIEWER = "index.html"

_BLOCKS = re.compile(r"(<tool_call>.*?</tool_call>|<answer>.*?</answer>|<think>.*?</think>)", re.DOTALL)
_BLOCK_CLASS = {"<tool_call>": "call", "<answer>": "answer", "<think>": "think"}

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em auto;max-width:1100px;padding:0 1em;color:#222}
pre{white-space:pre-wrap;word-break:break-word;margin:.3em 0;font:13px/1.35 ui-monospace,monospace}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:2px 6px;text-align:left}
tr.bad td{background:#fff0f0}.traj{border-top:3px solid #888;margin-top:2em}
.turn{border-left:3px solid #ccc;margin:.8em 0;padding-left:.8em}.tn{color:#777;font-size:12px}
.user{background:#f6f8fa;padding:.3em .6em}.asst{background:#eef6ee;padding:.3em .6em}
.call{background:#ffe9a8}.answer{background:#c8f0c8;font-weight:600}.think{color:#777}
.step{font-size:13px;color:#333}.err{color:#b00;font-weight:600}
figure{display:inline-block;margin:.3em .6em .3em 0}figcaption{font-size:11px;color:#666}
img{image-rendering:pixelated;height:auto;border:1px solid #ccc}
#filter{width:24em;padding:3px}
"""

_JS = (
    "const f=document.getElementById('filter'),c=document.getElementById('shown');"
    "f.addEventListener('input',()=>{const q=f.value.toLowerCase().split(/\\s+/).filter(Boolean);let n=0;"
    "for(const e of document.querySelectorAll('[data-search]')){"
    "const ok=q.every(w=>e.dataset.search.includes(w));e.hidden=!ok;if(ok&&e.tagName==='TR')n++;}"
    "c.textContent=n+' shown';});"
)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def highlight(text: str) -> str:
    """``text`` HTML-escaped, with its ``<tool_call>``, ``<answer>`` and ``<think>`` blocks wrapped in spans."""
    out = []
    for piece in _BLOCKS.split(text):
        if not piece:
            continue
        kind = next((cls for tag, cls in _BLOCK_CLASS.items() if piece.startswith(tag)), None)
        out.append(f'<span class="{kind}">{_esc(piece)}</span>' if kind and _BLOCKS.fullmatch(piece) else _esc(piece))
    return "".join(out)


def _text_block(kind: str, text: str) -> str:
    body = f"<pre>{_esc(text)}</pre>"
    if kind == "system" or len(text) > 800:
        first = text.strip().split("\n", 1)[0][:100]
        label = "system" if kind == "system" else f"{_esc(first)} … ({len(text)} characters)"
        return f"<details><summary>{label}</summary>{body}</details>"
    return body


def _turn_html(turn: Turn, images: list[dict[str, Any]]) -> str:
    parts = [f'<div class="turn"><div class="tn">turn {turn.number}</div>']
    if turn.user:
        parts.append('<div class="user">')
        for kind, value in turn.user:
            if kind != "image":
                parts.append(_text_block(kind, value))
            elif isinstance(value, int) and 0 <= value < len(images):
                ref = images[value]
                h, w = ref["shape"][:2]
                parts.append(
                    f'<figure><img src="{_esc(ref["path"])}" width="{min(max(w, 128), 320)}" alt="image {value}">'
                    f"<figcaption>image {value}: {w}x{h}</figcaption></figure>"
                )
            else:
                parts.append(f'<div class="err">image {_esc(value)}: missing</div>')
        parts.append("</div>")
    if turn.assistant is not None:
        parts.append(f'<div class="asst"><pre>{highlight(turn.assistant)}</pre></div>')
    if turn.step is not None:
        for note in step_notes(turn.step):
            cls = "err" if note.startswith(("ACTION ERROR", "ENV ERROR")) else "step"
            parts.append(f'<div class="{cls}">{_esc(note)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    steps = steps_of(record)
    last = steps[-1].info if steps else {}
    errors = sum(bool(s.info.get("action_error")) for s in steps)
    env_error = record["env_error"] or next((s.info["env_error"] for s in steps if s.info.get("env_error")), None)
    return {
        "steps": steps,
        "reward": float(sum(s.reward for s in steps)),
        "score": float(last.get("score", 0.0)),
        "success": bool(last.get("success", False)),
        "action_errors": errors,
        "env_error": env_error,
    }


def _page(run: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> str:
    script_hash = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'"
    )
    rows, sections = [], []
    for n, record in enumerate(records):
        s = _summary(record)
        flags = ("success" if s["success"] else "fail") + (" error" if s["action_errors"] or s["env_error"] else "")
        search = _esc(
            f"{record['env_id']} seed {record['task_seed']} g{record['group']} m{record['member']} "
            f"{record['policy']} {record['finish']} {flags}".lower()
        )
        bad = ' class="bad"' if s["env_error"] else ""
        cells = [
            f'<a href="#t{n}">{n}</a>',
            _esc(record["env_id"]),
            _esc(record["task_seed"]),
            f"{_esc(record['group'])}/{_esc(record['member'])}",
            _esc(record["policy"] or "-"),
            _num(s["reward"]),
            _num(s["score"]),
            _esc(record["finish"] or "-"),
            str(len(s["steps"])),
            (f"{s['action_errors']} action" if s["action_errors"] else "") + (" env" if s["env_error"] else ""),
        ]
        rows.append(f'<tr data-search="{search}"{bad}>' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        head = (
            f"<h2>#{n} {_esc(record['env_id'])} seed {_esc(record['task_seed'])} "
            f"group {_esc(record['group'])} member {_esc(record['member'])}</h2>"
            f"<p>policy {_esc(record['policy'] or '-')} · finish {_esc(record['finish'] or '-')} · "
            f"total reward {_num(s['reward'])} · score {_num(s['score'])}"
            f"{' · success' if s['success'] else ''}</p>"
        )
        if record["env_kwargs"]:
            head += f"<p>env kwargs <code>{_esc(json.dumps(record['env_kwargs'], sort_keys=True))}</code></p>"
        if s["env_error"]:
            head += f'<p class="err">ENV ERROR: {_esc(s["env_error"])}</p>'
        body = "".join(
            _turn_html(t, record["images"]) for t in turns(record["messages"], s["steps"], record["prompt_images"])
        )
        sections.append(f'<section class="traj" id="t{n}" data-search="{search}">{head}{body}</section>')
    shown = {k: v for k, v in meta.items() if k not in ("format", "version")}
    header = ["#", "env", "seed", "group/member", "policy", "reward", "score", "finish", "steps", "errors"]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        f"<title>visrl run {_esc(run.resolve().name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>visrl run {_esc(run.resolve().name)}</h1>"
        f"<details><summary>meta</summary><pre>{_esc(json.dumps(shown, indent=2, ensure_ascii=False))}</pre></details>"
        f'<p><input id="filter" placeholder="filter: env, seed, policy, finish, success, fail, error">'
        f' <span id="shown">{len(records)} shown</span></p>'
        "<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>{''.join(sections)}<script>{_JS}</script></body></html>\n"
    )


def write_viewer(run_dir: str | Path) -> Path:
    """Write ``index.html`` into a run directory saved by :func:`~agents.vlm.workbench.store.save_trajectories`."""
    run = Path(run_dir)
    page = _page(run, load_meta(run), read_records(run))
    path = run / VIEWER
    path.write_bytes(page.encode("utf-8", "replace"))  # a lone surrogate from a model becomes "?"
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``visrl view``."""
    parser.add_argument("run_dir", type=Path, help="a directory written by save_trajectories")
    parser.add_argument(
        "--print", dest="print_n", type=int, default=0, metavar="N", help="also print the first N transcripts"
    )


def run(args: argparse.Namespace) -> int:
    """``visrl view``: write the viewer, print its path (and ``--print N`` transcripts)."""
    try:
        path = write_viewer(args.run_dir)
        print(path.resolve())
        if args.print_n > 0:
            for trajectory in load_trajectories(args.run_dir, limit=args.print_n):
                print(transcript(trajectory))
    except StoreError as err:
        print(f"visrl view: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="visrl view", description=__doc__.split("\n", 1)[0] if __doc__ else None)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
