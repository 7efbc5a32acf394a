"""Progress bars for training / evaluation loops (tqdm), with a silent drop-in replacement.

Example::

    bar = progress(loader, desc="train", quiet=args.quiet)
    for x, y in bar:
        ...
        bar.set_postfix(rate=f"{rate:.1f} Hz", acc=f"{acc:.1%}")
    bar.close()
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Optional

from tqdm import tqdm

__all__ = ["progress", "QuietProgress"]


class QuietProgress:
    """Pass-through iterator with tqdm's bar-control methods as no-ops (prints nothing).

    Supports ``set_postfix``, ``set_postfix_str``, ``set_description``, ``update``, ``refresh``,
    ``reset``, ``close``, ``len()``, iteration and use as a context manager; :attr:`n` counts
    iterations / updates like tqdm's.
    """

    def __init__(
        self, iterable: Optional[Iterable] = None, total: Optional[float] = None, **kw: Any
    ):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.total = total
        self.n = 0
        self.desc = kw.get("desc")
        self.disable = True

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("QuietProgress was created without an iterable; use update() instead")
        for item in self.iterable:
            yield item
            self.n += 1

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("QuietProgress has no total length")
        return int(self.total)

    def __enter__(self) -> "QuietProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def set_description(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        self.desc = desc

    def set_description_str(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass

    def reset(self, total: Optional[float] = None) -> None:
        self.n = 0
        if total is not None:
            self.total = total

    def close(self) -> None:
        pass

    @staticmethod
    def write(s: str, *args: Any, **kwargs: Any) -> None:
        """Messages are suppressed too."""


def progress(
    iterable: Optional[Iterable] = None,
    total: Optional[float] = None,
    desc: Optional[str] = None,
    quiet: bool = False,
    **kw: Any,
) -> Any:
    """A :class:`tqdm.tqdm` bar over ``iterable``, or a silent :class:`QuietProgress`.

    Args:
        iterable: what to iterate over (``None`` for a manual bar driven by ``update``).
        total: number of expected iterations (default ``len(iterable)`` where defined).
        desc: label shown before the bar.
        quiet: return a :class:`QuietProgress` that prints nothing but supports the same
            ``set_postfix`` / ``update`` / ``close`` calls.
        **kw: passed to :class:`tqdm.tqdm` (e.g. ``leave=False``, ``unit="sample"``); ignored
            when ``quiet``.
    """
    if quiet:
        return QuietProgress(iterable, total=total, desc=desc)
    return tqdm(iterable, total=total, desc=desc, **kw)
