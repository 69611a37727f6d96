"""Benchmarks sharing RESULTS.md rewrite only their own marked section."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sections import marked_sections, replace_section, splice

HEAD = "# Results\n\nthroughput table\n"


def test_a_section_is_appended_then_replaced_in_place() -> None:
    once = splice(HEAD, "a", "first")
    assert once == HEAD.rstrip("\n") + "\n\n<!-- a:start -->\nfirst\n<!-- a:end -->\n"
    twice = splice(splice(once, "b", "other"), "a", "second")
    assert "first" not in twice and twice.index("second") < twice.index("other")
    assert splice("", "a", "x") == "<!-- a:start -->\nx\n<!-- a:end -->\n"


def test_the_head_can_be_rewritten_keeping_every_section(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(HEAD)
    replace_section(path, "a", "A body")
    replace_section(path, "b", "B body")
    kept = marked_sections(path.read_text())
    assert kept == "<!-- a:start -->\nA body\n<!-- a:end -->\n<!-- b:start -->\nB body\n<!-- b:end -->"
    assert marked_sections("no sections here") == ""


def test_the_rollout_report_is_rebuilt_from_a_saved_run(tmp_path: Path) -> None:
    """``--report-only`` rewrites the rollout section from the saved JSON: every measured row, the
    verdicts, measuring nothing."""
    import json

    from benchmarks import vlm_rollout

    saved = Path(vlm_rollout.__file__).with_name("vlm_rollout.json")
    out = tmp_path / "RESULTS.md"
    out.write_text(HEAD)
    vlm_rollout.main(["--report-only", "--json", str(saved), "--out", str(out)])
    text = out.read_text()
    raw = json.loads(saved.read_text())
    assert text.startswith(HEAD) and "## VLM rollout collector" in text
    for row in raw["rows"]:
        assert f"| {row['env_id'].split('/')[1]} | {row['setting']} |" in text
    assert "Targets missed" in text or "Every target is met" in text
