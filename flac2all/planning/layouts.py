"""The state's record of the ``--path-format`` its rows all follow: a run
that ended with no failure leaves every output where its template puts it, so
the next run with the same template takes an unchanged source's output from
its row, its tags unread.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from flac2all.model import Settings

if TYPE_CHECKING:
    from flac2all.state import State

# The state's meta key of the --path-format its rows all follow ("": not known).
LAYOUT_KEY = "layout"


def layout_key(settings: Settings) -> str:
    """What shapes a FLAC output's path under --path-format ("" without it)."""
    if not settings.path_format:
        return ""
    shape = [settings.path_format, settings.names.value, settings.max_path, settings.layout.value]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def layout_known(state: State, settings: Settings) -> bool:
    """Whether every state row of an unchanged source is where this run's
    --path-format puts it: the last run that ended with no failure had this
    template (``layout_done``), so an unchanged source's output is its row's,
    its tags unread. A run of another (or none) makes it unknown first,
    before any of its rows is written: a run killed while moving outputs
    leaves the next one reading every source's tags."""
    stored, key = state.meta(LAYOUT_KEY), layout_key(settings)
    if stored and stored != key and not state.readonly:
        state.set_meta(LAYOUT_KEY, "")
    return bool(key) and stored == key


def layout_done(state: State, settings: Settings, clean: bool) -> None:
    """A run that ended with no failure (``clean``) leaves every output of
    its sources where its --path-format puts them: recorded for the next."""
    key = layout_key(settings)
    if key and clean and state.meta(LAYOUT_KEY) != key:
        state.set_meta(LAYOUT_KEY, key)
