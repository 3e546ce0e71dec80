"""The rules for user and group names, and the key under which two names count as the same.

A name is shown to other people beside messages, so it must not be able to pass for another
one: it is refused (not silently changed, so LOGIN by name stays exact) when it is not in NFKC
form, holds control or format characters (bidi overrides, zero-width characters), begins or
ends with a space, shows nothing, or mixes scripts with look-alike letters (a Cyrillic "а" in
a Latin "alice"). Two names with the same key ("Bob", "bob", "BOB") cannot both be taken.
"""

import unicodedata

from attrs import frozen
from confusable_homoglyphs import categories, confusables

from chatserver.domain.errors import InvalidRequest

# Control, format (bidi overrides, zero-width), surrogate, private-use and unassigned characters:
# invisible, or able to disguise a name as another one.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Characters that show nothing although they are letters or symbols (Hangul fillers, the blank
# Braille pattern).
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# What shows nothing by itself: spaces, combining marks, and the blanks above.
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Mn", "Me"})
# Characters of these belong to no script of their own (digits, punctuation, accents).
_NO_SCRIPT = frozenset({"COMMON", "INHERITED"})
# Scripts that are written together (Unicode TR 39, "highly restrictive"): Latin with the
# scripts of Japanese, Chinese and Korean. Any other mix is refused when a letter in it has a
# look-alike.
_WRITTEN_TOGETHER = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)


@frozen
class NamedId:
    """A user's or group's id and name, and whether the name holds its key: a name kept from
    before keys (a later "bob" beside "Bob") has none, and keeps working without it."""

    id: int
    name: str
    keyed: bool


def name_key(name: str) -> str:
    """What a name is compared by for uniqueness: NFKC with case folded ("Bob", "bob", "ＢＯＢ"
    and "BOB" share one key)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def check_display_name(name: str, *, field: str, max_length: int) -> None:
    """Raise InvalidRequest saying which rule a new name of `field` breaks, if any."""
    if not 1 <= len(name) <= max_length:
        raise InvalidRequest(f"{field} must be 1 to {max_length} characters")
    if name.isascii():  # the common case: printable ASCII needs only three checks
        if not name.isprintable():
            raise InvalidRequest(f"{field} must not contain control characters")
        if name != name.strip():
            raise InvalidRequest(f"{field} must not begin or end with a space")
        if name.isspace():
            raise InvalidRequest(f"{field} must contain a visible character")
        return
    if not unicodedata.is_normalized("NFKC", name):
        raise InvalidRequest(
            f"{field} must be in Unicode NFKC form (no decomposed accents, no full-width"
            f" letters): try {unicodedata.normalize('NFKC', name)!r}"
        )
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise InvalidRequest(
            f"{field} must not contain control, format (bidi, zero-width) or unassigned characters"
        )
    if name != name.strip() or name[0] in _BLANK or name[-1] in _BLANK:
        raise InvalidRequest(f"{field} must not begin or end with a space")
    if all(c in _BLANK or unicodedata.category(c) in _INVISIBLE_CATEGORIES for c in name):
        raise InvalidRequest(f"{field} must contain a visible character")
    if is_mixed_script_confusable(name):
        raise InvalidRequest(
            f"{field} must not mix scripts with look-alike letters (such as a Cyrillic or"
            " Greek letter among Latin ones)"
        )


def is_mixed_script_confusable(name: str) -> bool:
    """Whether name mixes scripts that are not written together and holds a letter that looks
    like one of another script (the confusables data of Unicode TR 39)."""
    scripts = categories.unique_aliases(name) - _NO_SCRIPT
    if len(scripts) <= 1 or any(scripts <= together for together in _WRITTEN_TOGETHER):
        return False
    return bool(confusables.is_dangerous(name))


def name_problems(named: NamedId, *, field: str, max_length: int) -> list[str]:
    """What is wrong with an existing name under today's rules (for reports): empty if
    nothing."""
    problems = []
    try:
        check_display_name(named.name, field=field, max_length=max_length)
    except InvalidRequest as error:
        problems.append(error.message)
    if not named.keyed:
        problems.append(f"{field} differs only in case or form from an earlier one")
    return problems
