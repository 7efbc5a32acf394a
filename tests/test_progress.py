"""Tests for pysnn.progress."""

import io

from tqdm import tqdm

from pysnn.progress import QuietProgress, progress


def test_progress_returns_tqdm_with_postfix():
    out = io.StringIO()
    bar = progress(range(4), desc="train", file=out, mininterval=0)
    assert isinstance(bar, tqdm)
    items = []
    for i in bar:
        items.append(i)
        bar.set_postfix(rate=f"{i * 2.5:.1f}Hz", acc=0.5)
    bar.close()
    assert items == [0, 1, 2, 3]
    text = out.getvalue()
    assert "train" in text and "acc=0.5" in text and "rate=7.5Hz" in text
    assert "4/4" in text


def test_quiet_progress_is_silent_passthrough(capsys):
    bar = progress(iter("abc"), total=3, desc="x", quiet=True)
    assert isinstance(bar, QuietProgress)
    seen = []
    for item in bar:
        seen.append(item)
        bar.set_postfix(acc=1.0)
        bar.set_postfix_str("hi")
        bar.set_description("y")
    assert seen == ["a", "b", "c"]
    assert bar.n == 3 and len(bar) == 3
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_quiet_manual_updates_and_context_manager():
    with progress(total=10, quiet=True) as bar:
        bar.update(4)
        bar.update()
        bar.refresh()
    assert bar.n == 5 and bar.total == 10
    bar.reset(total=20)
    assert bar.n == 0 and bar.total == 20
    assert len(progress([1, 2], quiet=True)) == 2
