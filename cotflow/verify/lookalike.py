"""Characters that pass for ASCII digits, minus signs or Latin letters, and invisible ones.

Non-ASCII decimal digits, fullwidth forms, dashes and the minus sign, Cyrillic letters,
zero-width and bidirectional controls. An answer with any is unparseable, not graded on what
it looks like (reward hacking by look-alikes, or text that reads as another number); the
grader checks extracted answers for them, and the last-number reader checks a number's
neighbours, since reading `−7` as `7` would grade what the text does not say.
"""

from __future__ import annotations

import re

__all__ = ["LOOKALIKE"]

LOOKALIKE = re.compile(
    "(?![0-9])\\d|[\uff00-\uffef\u2010-\u2015\u2212\ufe58\ufe63\u0400-\u04ff"
    "\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
