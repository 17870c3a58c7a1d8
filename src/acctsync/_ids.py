"""Salesforce record IDs (rule R6).

A Salesforce ID is 15 case-sensitive alphanumerics, or those 15 plus a 3-character
suffix that encodes which of them are upper case, so that the 18-character form survives
case-insensitive tools. acctsync stores the 18-character form, accepts either, and rejects
anything else, including an 18-character ID whose suffix does not match its first 15.
"""

from __future__ import annotations

from typing import Final

from acctsync._errors import InvalidRecordError

__all__ = ["ACCOUNT_PREFIX", "CONTACT_PREFIX", "OPPORTUNITY_PREFIX", "normalize_id"]

ACCOUNT_PREFIX: Final = "001"
CONTACT_PREFIX: Final = "003"
OPPORTUNITY_PREFIX: Final = "006"

_SUFFIX_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


_UPPER_AS_ONE: Final = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "1" * 26 + "0" * 36
)


# Bit i of a block's number is set when character i of the block is upper case: as a
# string of 0s and 1s read left to right, that is the number's binary digits reversed.
_LETTERS: Final = {
    format(bits, "05b")[::-1]: letter for bits, letter in enumerate(_SUFFIX_ALPHABET)
}


def _suffix(value: str) -> str:
    """The checksum of the first 15 characters of ``value``."""
    flags = value.translate(_UPPER_AS_ONE)
    return _LETTERS[flags[:5]] + _LETTERS[flags[5:10]] + _LETTERS[flags[10:15]]


def normalize_id(value: object, *, prefix: str | None = None) -> str:
    """Return the 18-character form of a 15- or 18-character Salesforce ID.

    ``prefix`` is the object's key prefix (``"001"`` for Account, ``"003"`` for Contact)
    and is checked when given. Raises `InvalidRecordError` for anything that is not a
    well-formed ID of that object.
    """
    if not isinstance(value, str):
        raise InvalidRecordError(f"a Salesforce ID must be a string, not {type(value).__name__}")
    size = len(value)
    # isascii() and isalnum() together are [0-9A-Za-z], at a fraction of a regex's cost.
    if (size != 18 and size != 15) or not (value.isascii() and value.isalnum()):
        raise InvalidRecordError(f"{value!r} is not a Salesforce ID (15 or 18 letters and digits)")
    if prefix is not None and not value.startswith(prefix):
        raise InvalidRecordError(f"{value!r} does not start with key prefix {prefix!r}")
    suffix = _suffix(value)
    if size == 15:
        return value + suffix
    if value[15:] != suffix:
        raise InvalidRecordError(f"{value!r} has checksum {value[15:]!r}, expected {suffix!r}")
    return str(value)  # a plain str, should ``value`` be of a subclass
