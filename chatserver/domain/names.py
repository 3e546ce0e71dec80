"""The rules for user and group names, and the key under which two names count as the same.

A name is shown to other people beside messages, so it must not be able to pass for another
one: it is refused (not silently changed, so LOGIN by name stays exact) when it is not in NFKC
form, holds control or format characters (bidi overrides, zero-width characters), begins or
ends with a space, shows nothing, or mixes scripts with look-alike letters (a Cyrillic "а" in
a Latin "alice"). Two names with the same key cannot both be taken: "Bob", "bob" and "BOB",
and also names that look alike letter for letter, "paypal" and "раураl" written all in
Cyrillic, "bill" and "bi11" (the skeleton of Unicode TR 39).
"""

import hashlib
import unicodedata
from functools import lru_cache

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


# Keys longer than this (a name of 50 characters that each stand for several letters: "ﷺ" is
# 18) are stored as their digest: the key columns hold 255 characters.
_KEY_CHARACTERS = 190


def name_key(name: str) -> str:
    """What a name is compared by for uniqueness: its skeleton (Unicode TR 39: each character
    replaced by the one it is confusable with, "а" by "a", "0" by "O", "m" by "rn") with case
    folded, taken of the name in NFKC with case folded. So "Bob", "bob", "ＢＯＢ" and "BOB" share
    one key, and so do "admin" and "аdmin" (Cyrillic а), "paypal" and "раураl" (all
    Cyrillic), "bill" and "bi11". Look-alikes in capitals only ("I" and "l") are not caught:
    the case is folded first, so that names differing in case always share their key."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    if folded.isascii() and folded.isalpha() and "m" not in folded:
        return folded  # the common case: ASCII letters stand for themselves (all but m)
    key = skeleton(folded).casefold()
    if len(key) > _KEY_CHARACTERS:
        return "#" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def skeleton(text: str) -> str:
    """Unicode TR 39's skeleton: NFD, each character replaced by its prototype in the
    confusables data, NFD again. Two strings with the same skeleton look alike."""
    prototypes = _prototypes()
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(prototypes.get(c, c) for c in decomposed))


@lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    """Each confusable character's prototype, from confusable-homoglyphs' copy of TR 39's
    confusables.txt. That copy lists each pair both ways (source to prototype, prototype to
    each of its sources), so the direction is read back: a character listed with several
    look-alikes, or with a look-alike that has several, is the prototype; a character paired
    with a string of several characters is the source (sources are single characters). A
    pair alone both ways maps both to the lower of the two: the same skeleton either way."""
    data: dict[str, list[str]] = {
        _clean(char): [_clean(entry["c"]) for entry in entries]
        for char, entries in confusables.confusables_data.items()
    }
    prototypes: dict[str, str] = {}
    for char, alikes in data.items():
        if len(char) != 1 or len(alikes) != 1 or alikes[0] == char:
            continue
        (alike,) = alikes
        if len(alike) != 1 or len(data.get(alike, ())) > 1:
            prototypes[char] = alike
        else:
            prototypes[char] = min(char, alike)
    return prototypes


def _clean(text: str) -> str:
    """Without the left-to-right marks that confusable-homoglyphs puts around RTL letters."""
    return text.replace("\u200e", "")


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
        problems.append(
            f"{field} differs only in case, form or look-alike letters from an earlier one"
        )
    return problems
