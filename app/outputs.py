"""Write a finished focal stack: 9 PNG frames, a sweep GIF, an HTML viewer, run.json, and, when the
run computed them, the stack's depth-of-field views (all_in_focus.png, depth.png, and a panel in the
viewer with focus and strength sliders over precomputed re-renders: :class:`DofOutputs`).

Atomicity: every file is rendered into a hidden staging folder next to out_dir and the
whole folder is then published at once (runtime/publish.py): a kill at any instant leaves
the earlier run's results or the new ones, never a mix, and only one process writes
out_dir at a time.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from refocus_edge.dof.viewer_page import DofOutputs, PanelHtml, PreviewGrid, dof_panel  # noqa: F401 (DofOutputs: public here too)
from refocus_edge.runtime.errors import InvalidArgumentError, OutputExistsError
from refocus_edge.dof.html_page import html_page
from refocus_edge.runtime.publish import check_writable, publishing

N_FRAMES = 9
GIF_FRAME_MS = 120  # ~8 fps; GIF stores centiseconds, so 125 ms would round to 120 anyway
FRAME_NAMES = [f"frame_{i}.png" for i in range(N_FRAMES)]
GIF_NAME, VIEWER_NAME, RUN_JSON_NAME = "focus_sweep.gif", "viewer.html", "run.json"
RESULT_NAMES = [*FRAME_NAMES, GIF_NAME, VIEWER_NAME, RUN_JSON_NAME]
# The same names `refocus edit` gives these images, so both commands' folders read alike.
AIF_NAME, DEPTH_NAME = "all_in_focus.png", "depth.png"
DOF_NAMES = [AIF_NAME, DEPTH_NAME]
#: Results of a run with depth-of-field views; run.json stays last (it marks a complete set).
RESULT_NAMES_WITH_DOF = [*FRAME_NAMES, *DOF_NAMES, GIF_NAME, VIEWER_NAME, RUN_JSON_NAME]
# Only files named like ours count as stale; a user's "frame_backup.png" stays.
_OUR_FRAME = re.compile(r"frame_\d+\.png")


def result_names(with_dof: bool) -> list[str]:
    """The files a run publishes, in publishing order (run.json last)."""
    return list(RESULT_NAMES_WITH_DOF if with_dof else RESULT_NAMES)


def result_bytes_estimate(width: int, height: int) -> int:
    """An upper bound of a run's folder on disk: 9 PNG frames and the two depth-of-field images
    (at most raw size), the 16-frame sweep GIF, the viewer (base64 frames and previews), run.json."""
    return 100 * width * height + 4 * 2 ** 20


def check_output_dir(out_dir: str | Path, force: bool) -> None:
    """Refuse, before any expensive work, to overwrite an earlier run without --force."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidArgumentError("exists and is not a folder; pick another --out", out_dir)
    check_writable(out_dir)
    if not force and out_dir.is_dir() and any(out_dir.glob("frame_*.png")):
        raise OutputExistsError(
            "already holds frame_*.png from an earlier run; "
            "pass --force to replace them or pick another --out",
            out_dir,
        )


def write_stack(
    out_dir: str | Path,
    frames: np.ndarray,
    *,
    icc_profile: bytes | None,
    input_position: int,
    metadata: dict,
    force: bool,
    dof: DofOutputs | None = None,
) -> list[Path]:
    """Render everything into a staging folder, then publish it as out_dir.

    frames: uint8 [9, H, W, 3], ordered near (0) to far (8). input_position:
    the frame whose focus matches the input photo. dof: the stack's depth-of-field
    views, or None for the stack alone. Returns the published paths.
    """
    _validate(frames, icc_profile, input_position, metadata)
    _validate_dof(dof, frames.shape[1:3])
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, force)  # again: the folder may have changed since the first check
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    # All or nothing, one writer at a time (runtime/publish.py); a user's own files and
    # subfolders in out_dir (a `refocus edit` folder) are carried over, stale results are not.
    with publishing(out_dir, carry_over=lambda name: not is_our_result(name)) as staging:
        _render(staging, frames, icc_profile, input_position, metadata, dof)
    return [out_dir / name for name in result_names(dof is not None)]


def _validate(frames, icc_profile, input_position, metadata) -> None:
    if not isinstance(frames, np.ndarray):
        raise InvalidArgumentError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise InvalidArgumentError(
            f"frames must be uint8, got {frames.dtype}; "
            "convert with np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)"
        )
    if frames.ndim != 4 or frames.shape[0] != N_FRAMES or frames.shape[3] != 3 or 0 in frames.shape:
        raise InvalidArgumentError(f"frames must have shape [{N_FRAMES}, H, W, 3], got {list(frames.shape)}")
    if icc_profile is not None and not isinstance(icc_profile, (bytes, bytearray)):
        raise InvalidArgumentError(f"icc_profile must be bytes or None, got {type(icc_profile).__name__}")
    is_int = isinstance(input_position, (int, np.integer)) and not isinstance(input_position, bool)
    if not is_int or not 0 <= input_position < N_FRAMES:
        raise InvalidArgumentError(
            f"input_position must be an integer 0..{N_FRAMES - 1}, got {input_position!r}"
        )
    if not isinstance(metadata, dict):
        raise InvalidArgumentError(f"metadata must be a dict, got {type(metadata).__name__}")


def _validate_dof(dof, size_hw) -> None:
    if dof is None:
        return
    if not isinstance(dof, DofOutputs):
        raise InvalidArgumentError(f"dof must be a DofOutputs or None, got {type(dof).__name__}")
    for name, arr in (("all_in_focus", dof.all_in_focus), ("depth_rgb", dof.depth_rgb)):
        if not (isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.shape == (*size_hw, 3)):
            got = list(arr.shape) if isinstance(arr, np.ndarray) else type(arr).__name__
            raise InvalidArgumentError(
                f"dof.{name} must be uint8 [{size_hw[0]}, {size_hw[1]}, 3] like the frames, got {got}")
    if not isinstance(dof.previews, PreviewGrid):
        raise InvalidArgumentError(f"dof.previews must be a PreviewGrid, got {type(dof.previews).__name__}")


def _render(
    staging: Path, frames: np.ndarray, icc: bytes | None, input_position: int, metadata: dict,
    dof: DofOutputs | None = None,
) -> None:
    extra = {"icc_profile": bytes(icc)} if icc else {}
    images = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in frames]
    for img, name in zip(images, FRAME_NAMES):
        img.save(staging / name, "PNG", **extra)
    panel = None
    if dof is not None:
        # ICC on the all-in-focus image (it is a photo in the frames' colour space), not on the depth
        # map (data), as `refocus edit` does.
        Image.fromarray(np.ascontiguousarray(dof.all_in_focus), "RGB").save(staging / AIF_NAME, "PNG", **extra)
        Image.fromarray(np.ascontiguousarray(dof.depth_rgb), "RGB").save(staging / DEPTH_NAME, "PNG")
        panel = dof_panel(dof.previews, focus=float(input_position), strength=dof.strength, prefix="dof-",
                          note="Re-rendered from the all-in-focus image and the depth estimated from the stack.")

    # near -> far -> near without repeating the end frames, so the loop is smooth.
    sweep = images + images[-2:0:-1]
    sweep[0].save(
        staging / GIF_NAME, "GIF", save_all=True, append_images=sweep[1:], duration=GIF_FRAME_MS, loop=0
    )

    # The viewer embeds exactly the bytes of the published PNGs.
    uris = [
        "data:image/png;base64," + base64.b64encode((staging / n).read_bytes()).decode("ascii")
        for n in FRAME_NAMES
    ]
    page = _viewer_html(uris, input_position, width=frames.shape[2], height=frames.shape[1], panel=panel)
    (staging / VIEWER_NAME).write_text(page, encoding="utf-8")

    record = {**metadata, "files": result_names(dof is not None)}
    # default=str: Paths and similar values in metadata are recorded, not fatal.
    text = json.dumps(record, indent=2, default=str) + "\n"
    (staging / RUN_JSON_NAME).write_text(text, encoding="utf-8")


def is_our_result(name: str) -> bool:
    """Whether `name` in an output folder is one of the files a run writes (or a stale frame of
    ours), as opposed to a user's file: only ours are replaced when a new run is published."""
    return name in RESULT_NAMES_WITH_DOF or bool(_OUR_FRAME.fullmatch(name))


def _viewer_html(uris: list[str], input_position: int, width: int, height: int,
                 panel: PanelHtml | None = None) -> str:
    """Self-contained viewer: all frames inline, a slider, arrow keys; no external resources.

    With `panel` (:func:`refocus_edge.dof.viewer_page.dof_panel`), a depth-of-field section follows the
    stack (all-in-focus image, depth map and legend, focus and strength sliders over precomputed
    re-renders); the stack stays the first view.
    """
    last = len(uris) - 1
    imgs = "\n".join(
        f'<img id="f{i}" src="{u}" width="{width}" height="{height}" alt="focus position {i}"'
        f'{"" if i == input_position else " hidden"}>'
        for i, u in enumerate(uris)
    )
    ticks = "".join(f'<option value="{i}"></option>' for i in range(len(uris)))
    # The marker sits where the slider thumb is at the input position (thumb ~16 px wide).
    mark_left = f"calc({input_position / last:.4f} * (100% - 16px) + 8px)"
    dof_css = panel.css.lstrip("\n") if panel is not None else ""
    dof_body = "" if panel is None else f"""<section class="dof" aria-label="depth of field">
<h2>Depth of field</h2>
{panel.body}
</section>
"""
    dof_script = "" if panel is None else f"<script>\n{panel.script}\n</script>\n"
    css = f"""#stack img {{ display: block; max-width: 95vw; max-height: 78vh; min-width: min(512px, 95vw); width: auto; height: auto; }}
#stack img[hidden] {{ display: none; }}
.controls {{ width: min({max(width, 320)}px, 95vw); }}
.controls input[type=range] {{ width: 100%; margin: 0; }}
.marks {{ position: relative; height: 18px; }}
.mark {{ position: absolute; transform: translateX(-50%); color: #fc6; white-space: nowrap; }}
.ends {{ display: flex; justify-content: space-between; }}
.dof {{ display: flex; flex-direction: column; align-items: center; gap: 10px; margin-top: 16px;
        border-top: 1px solid #333; padding-top: 8px; }}
.dof h2 {{ font-size: 16px; font-weight: 600; margin: 0; }}
{dof_css}"""
    body = f"""<div id="stack">
{imgs}
</div>
<div class="controls">
<input id="focus" type="range" min="0" max="{last}" step="1" value="{input_position}" list="ticks"
       aria-label="focus position, 0 is near, {last} is far" autofocus>
<datalist id="ticks">{ticks}</datalist>
<div class="marks"><span class="mark" style="left: {mark_left}" title="focus of the input photo">&#9650; input</span></div>
<div class="ends"><span>near</span><span id="label"></span><span>far</span></div>
</div>
{dof_body}<script>
(function () {{
  var slider = document.getElementById("focus"), label = document.getElementById("label");
  var last = {last}, inputPos = {input_position}, shown = inputPos;
  function show(i) {{
    i = Math.max(0, Math.min(last, i));
    document.getElementById("f" + shown).hidden = true;
    document.getElementById("f" + i).hidden = false;
    shown = i;
    slider.value = i;
    label.textContent = "position " + i + " of " + last + (i === inputPos ? " (input focus)" : "");
  }}
  slider.addEventListener("input", function () {{ show(parseInt(slider.value, 10)); }});
  // Handled globally (and the default prevented) so arrows work whether or not the slider has focus,
  // except on the page's other controls (the depth-of-field sliders keep their own keys).
  document.addEventListener("keydown", function (e) {{
    var t = e.target;
    if (t && t !== slider && (t.tagName === "INPUT" || t.tagName === "SELECT")) return;
    var step = {{ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1}}[e.key];
    if (step !== undefined) show(shown + step);
    else if (e.key === "Home") show(0);
    else if (e.key === "End") show(last);
    else return;
    e.preventDefault();
  }});
  show(inputPos);
}})();
</script>
{dof_script}"""
    return html_page("Refocus Edge - focal stack", css, body)
