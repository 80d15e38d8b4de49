"""The shell every self-contained viewer page shares: doctype, dark centred column, inline CSS.

The pages embed everything (images as data URIs, scripts inline), so they open from disk
with no server and no network."""
from __future__ import annotations

import html


def html_page(title: str, css: str, body: str, gap_px: int = 12) -> str:
    """The whole page: `title` is plain text (escaped here); `css` and `body` are markup, inserted as
    they are, so whoever builds them escapes what they hold."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ margin: 0; padding: 16px; background: #111; color: #eee; font: 14px system-ui, sans-serif;
       display: flex; flex-direction: column; align-items: center; gap: {gap_px}px; }}
{css}</style>
</head>
<body>
{body}</body>
</html>
"""
