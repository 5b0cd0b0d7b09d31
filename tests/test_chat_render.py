"""desktop.chat.render: Qt-free HTML for chat messages."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from desktop.chat import render as R
from desktop.chat.render import (
    STREAM_CURSOR, MessageDisplay, Theme, copy_href, parse_copy_href, render_empty_state,
    render_markdown, render_message, split_chunks,
)

LIGHT = Theme(dark=False)
DARK = Theme(dark=True)


def msg(content: str, role: str = "assistant", **kw) -> MessageDisplay:
    return MessageDisplay(key=kw.pop("key", "m1"), role=role, content=content, **kw)


def test_raw_html_is_escaped_never_rendered():
    for role in ("assistant", "user", "system"):
        html = render_message(msg('Hi <script>alert("x")</script> <b>bold?</b>', role), LIGHT).html
        assert "<script" not in html and "<b>bold?" not in html
        assert "&lt;script&gt;" in html and "&lt;b&gt;bold?&lt;/b&gt;" in html


def test_html_in_code_is_escaped():
    r = render_message(msg("```html\n<script>x()</script>\n```\n\nand `<i>inline</i>`"), LIGHT)
    assert "<script" not in r.html and "<i>inline" not in r.html
    assert r.code_blocks == ["<script>x()</script>"]


def test_unsafe_links_are_not_linkified_and_images_not_loaded():
    html = render_message(msg(
        "[a](javascript:alert(1)) [b](vbscript:x) [c](https://example.com/x?a=1&b=2) "
        "![pic](data:image/png;base64,AAAA) ![web](https://example.com/p.png)"), LIGHT).html
    assert "javascript:" not in html.split("[a]")[0] and 'href="javascript' not in html
    assert 'href="vbscript' not in html
    assert 'href="https://example.com/x?a=1&amp;b=2"' in html
    assert "<img" not in html
    assert "[image: pic]" in html and 'href="https://example.com/p.png"' in html


def test_fenced_code_is_highlighted_with_copy_links():
    r = render_message(msg("Text\n\n```python\ndef f(x):\n    return x  # hi\n```\n\n"
                           "```rust\nfn main() {}\n```\n"), LIGHT, )
    assert r.code_blocks == ["def f(x):\n    return x  # hi", "fn main() {}"]
    assert 'href="copy:m1:0"' in r.html and 'href="copy:m1:1"' in r.html
    assert "<pre" in r.html and '<span style="color:' in r.html  # Pygments inline colours
    assert ">python<" in r.html and ">rust<" in r.html
    assert "    <span" in r.html  # indentation kept verbatim inside <pre>


def test_indented_code_and_unknown_language_fall_back_safely():
    r = render_message(msg("Para\n\n    plain <code>\n    block\n\n```nosuchlang\na < b\n```"), LIGHT)
    assert r.code_blocks == ["plain <code>\nblock", "a < b"]
    assert "a &lt; b" in r.html and "plain &lt;code&gt;" in r.html
    assert 'href="copy:m1:1"' in r.html


def test_guessing_only_for_longer_unlabelled_blocks():
    short = render_message(msg("```\nx = 1\n```"), LIGHT).html
    assert ">text<" in short and '<span style="color:' not in short.split("<pre")[1]
    long_py = "#!/usr/bin/env python\nimport os\nprint(os.getcwd())\n"
    assert ">Python<" in render_message(msg(f"```\n{long_py}```"), LIGHT).html


def test_lexer_errors_do_not_break_rendering(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("lexer bug")
    monkeypatch.setattr(R, "highlight", boom)
    R._highlight.cache_clear()
    R._render_chunk.cache_clear()
    try:
        r = render_message(msg("```python\nx = '<'\n```"), LIGHT)
        assert r.code_blocks == ["x = '<'"] and "x = '&lt;'</pre>" in r.html
    finally:
        R._highlight.cache_clear()
        R._render_chunk.cache_clear()


def test_inline_code_gets_a_background():
    html = render_message(msg("use `pip install x` now"), LIGHT).html
    assert f"background-color:{LIGHT.inline_code_background}" in html and "pip install x" in html


def test_unclosed_fence_while_streaming_renders_as_code_with_cursor():
    r = render_message(msg("Here:\n\n```python\nfor i in range(3):\n    print(i)\n",
                           status="streaming"), LIGHT)
    assert r.code_blocks == ["for i in range(3):\n    print(i)"]
    assert "<pre" in r.html and STREAM_CURSOR in r.html
    assert STREAM_CURSOR not in "".join(r.code_blocks)


def test_cursor_sits_in_last_paragraph_or_list_item():
    html = render_message(msg("Hello there", status="streaming"), LIGHT).html
    assert f"there<span style=\"color:{LIGHT.muted};\">{STREAM_CURSOR}</span></p>" in html
    html = render_message(msg("- one\n- two", status="streaming"), LIGHT).html
    assert f"{STREAM_CURSOR}</span></li>" in html
    assert STREAM_CURSOR in render_message(msg("", status="streaming"), LIGHT).html
    assert STREAM_CURSOR not in render_message(msg("Hello there"), LIGHT).html


def test_headers_meta_notice_and_status_notes():
    r = render_message(msg("ok", meta="Gemma 3 270M · 34.1 tok/s", notice="Context <trimmed>"), LIGHT)
    assert ">Assistant</p>" in r.html and "Gemma 3 270M · 34.1 tok/s" in r.html
    assert "Context &lt;trimmed&gt;" in r.html and LIGHT.warning in r.html
    assert ">You</p>" in render_message(msg("hi", "user"), LIGHT).html
    assert ">System</p>" in render_message(msg("hi", "system"), LIGHT).html
    assert "Reply interrupted: the engine stopped." in render_message(
        msg("par", status="interrupted"), LIGHT).html
    assert "Stopped." in render_message(msg("par", status="cancelled"), LIGHT).html
    err = render_message(msg("", status="error", notice="Out of memory"), LIGHT).html
    assert "Out of memory" in err and LIGHT.error in err


def test_user_bubble_background_and_line_breaks():
    html = render_message(msg("line one\nline two", "user"), LIGHT).html
    assert f'bgcolor="{LIGHT.user_bubble}"' in html and "<br" in html
    assistant = render_message(msg("line one\nline two"), LIGHT).html
    assert LIGHT.user_bubble not in assistant


def test_tables_lists_headings_render():
    html = render_message(msg("# Title\n\n| a | b |\n|--:|---|\n| 1 | 2 |\n\n1. x\n2. y\n\n"
                              "> quoted\n\n~~gone~~"), LIGHT).html
    assert "<h1" in html and "<table border=\"1\"" in html and '<td align="right">1</td>' in html
    assert "<ol" in html and "quoted" in html and "<s>gone</s>" in html


def test_themes_differ_and_can_be_overridden():
    assert DARK.background != LIGHT.background and DARK.code_style != LIGHT.code_style
    assert Theme(dark=True, link="#123456").link == "#123456"
    assert Theme(dark=True) == DARK
    code = "```python\nx = 1\n```"
    assert render_message(msg(code), LIGHT).html != render_message(msg(code), DARK).html
    assert DARK.code_background in render_message(msg(code), DARK).html


def test_copy_href_round_trips_odd_keys():
    for key in ("m1", "a:b c%/é?#x", ""):
        assert parse_copy_href(copy_href(key, 7)) == (key, 7)
    assert parse_copy_href("https://x.org") is None
    assert parse_copy_href("copy:abc") is None


def test_chunked_rendering_matches_a_single_pass():
    samples = [
        "Para\n\n- a\n- b\n\nPara two\n\n1. x\n\n2. y\n\nText\n\n```py\nx=1\n\ny=2\n```\n\n"
        "After\n\n    indented\n\n    more\nend\n\n> q\n\n> q2\n\n| a | b |\n|--|--|\n| 1 | 2 |\n",
        "- a\n\n  cont\n\n- b\n\nx", "~~~\nfence\n\nstill\n~~~~\n\nout", "```\nopen\n\nmore",
        "[ref]\n\n[ref]: https://x.org", "1) a\n\n2) b\n\nc\n\n3. d", "````\n```\n\nin\n````\n\nz",
    ]
    for text in samples:
        for user in (False, True):
            blocks: list[str] = []
            md = R._MD_USER if user else R._MD_ASSISTANT
            whole = md.render(text, {"theme": LIGHT, "blocks": blocks})
            whole = R._COPY_SLOT_RE.sub(lambda m: copy_href("k", int(m.group(1))), whole)
            assert render_markdown(text, "k", LIGHT, user=user) == (whole, blocks)
    assert len(split_chunks(samples[0])) > 5


def test_large_reply_renders_completely():
    parts = []
    for i in range(150):
        parts.append(f"Paragraph {i} with **bold** and `code_{i}` and a [link](https://e.com/{i}).\n\n"
                     f"- item {i}\n- more\n\n```python\ndef f_{i}(x):\n    return x * {i}\n```\n\n")
    text = "".join(parts)
    assert len(text) > 20_000
    r = render_message(msg(text + "tail marker"), DARK)
    assert len(r.code_blocks) == 150 and r.code_blocks[149] == "def f_149(x):\n    return x * 149"
    assert 'href="copy:m1:149"' in r.html and "tail marker" in r.html
    # Streaming growth re-uses the cached chunks and still gives the same answer.
    grown = render_message(msg(text + "tail marker and more", status="streaming"), DARK)
    assert len(grown.code_blocks) == 150 and "tail marker and more" in grown.html


def test_empty_state_is_escaped_and_centred():
    html = render_empty_state(LIGHT, "Start <here>", "Line one\nLine & two")
    assert "Start &lt;here&gt;" in html and "Line &amp; two" in html and 'align="center"' in html


def test_render_module_is_qt_free():
    code = ("import sys, desktop.chat.render; "
            "sys.exit(any(m.startswith('PySide6') for m in sys.modules))")
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


@pytest.mark.parametrize("status", ["complete", "streaming", "interrupted", "cancelled", "error"])
def test_every_status_renders(status):
    assert "<table" in render_message(msg("x", status=status), LIGHT).html
