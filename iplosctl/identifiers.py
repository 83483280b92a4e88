"""Check digits of Norwegian identifiers (DOMAIN.md §6).

Pure functions, no I/O: used by manifest validation (org numbers), by the
pre-flight rules (person ids) and by the synthetic export generator.
"""

from __future__ import annotations

import operator
from enum import Enum

_ORG_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
_K1_WEIGHTS = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 control digit, or None where the remainder makes the number invalid."""
    if len(digits) != len(weights) or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"expected {len(weights)} digits")
    # Hot (every person id): multiply the ASCII codes, then take off 48 ('0') per weight.
    remainder = (sum(map(operator.mul, digits.encode(), weights)) - 48 * sum(weights)) % 11
    control = 0 if remainder == 0 else 11 - remainder
    return None if control == 10 else control


def org_number_control_digit(first8: str) -> int | None:
    """Control digit for the first 8 digits of an org number (DOMAIN.md §6.2)."""
    return _mod11(first8, _ORG_WEIGHTS)


def is_valid_org_number(value: str) -> bool:
    """Nine digits with a correct mod-11 check digit (weights 3 2 7 6 5 4 3 2)."""
    if len(value) != 9 or not value.isascii() or not value.isdigit():
        return False
    return org_number_control_digit(value[:8]) == int(value[8])


def person_control_digits(first9: str) -> tuple[int, int] | None:
    """k1 and k2 for the first nine digits of a fødselsnummer, or None if none exist."""
    k1 = _mod11(first9, _K1_WEIGHTS)
    if k1 is None:
        return None
    k2 = _mod11(first9 + str(k1), _K2_WEIGHTS)
    if k2 is None:
        return None
    return k1, k2


class PersonIdKind(Enum):
    """What kind of person number an 11-digit id is, by its day and month digits."""

    FNR = "fødselsnummer"
    DNR = "D-number"
    HNR = "H-number"
    TNR = "Test-Norge"
    DNR_TNR = "Test-Norge D-number"


def has_valid_person_control_digits(value: str) -> bool:
    """Eleven digits whose two control digits are right (pre-2032 rule, DOMAIN.md §6.1)."""
    if len(value) != 11 or not value.isascii() or not value.isdigit():
        return False
    return person_control_digits(value[:9]) == (int(value[9]), int(value[10]))


def person_id_kind(value: str) -> PersonIdKind:
    """Classify by the first and third digits, as navikt/fnrvalidator does (DOMAIN.md §6.1).

    First digit ≥ 4 is a D-number (day + 40); third digit ≥ 8 is a synthetic
    Test-Norge number (month + 80); third digit ≥ 4 is an H-number (month + 40).
    """
    d_number = int(value[0]) >= 4
    third = int(value[2])
    if third >= 8:
        return PersonIdKind.DNR_TNR if d_number else PersonIdKind.TNR
    if third >= 4:
        return PersonIdKind.HNR
    return PersonIdKind.DNR if d_number else PersonIdKind.FNR


def is_synthetic_person_id(value: str) -> bool:
    """True for Skatteetaten's Test-Norge numbers (month + 80)."""
    return person_id_kind(value) in (PersonIdKind.TNR, PersonIdKind.DNR_TNR)
