from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from iplosctl.identifiers import (
    PersonIdKind,
    has_valid_person_control_digits,
    is_synthetic_person_id,
    is_valid_org_number,
    org_number_control_digit,
    person_control_digits,
    person_id_kind,
)


def test_org_number_example_from_brreg() -> None:
    # DOMAIN.md §6.2: 12345678 → sum 138, remainder 6 → check digit 5
    assert org_number_control_digit("12345678") == 5
    assert is_valid_org_number("123456785")
    assert not is_valid_org_number("123456784")


def test_org_number_shape() -> None:
    for bad in ("12345678", "1234567850", "12345678a", "123 456 785", "１２３４５６７８５"):
        assert not is_valid_org_number(bad)


@given(st.from_regex(r"[0-9]{8}", fullmatch=True))
def test_org_number_one_valid_check_digit_at_most(first8: str) -> None:
    valid = [d for d in "0123456789" if is_valid_org_number(first8 + d)]
    assert len(valid) <= 1
    assert (org_number_control_digit(first8) is None) == (not valid)


@given(st.from_regex(r"[0-9]{9}", fullmatch=True))
def test_person_control_digits_make_the_check_sums_zero(first9: str) -> None:
    digits = person_control_digits(first9)
    if digits is None:
        return
    number = first9 + "".join(map(str, digits))
    d = [int(c) for c in number]
    # DOMAIN.md §6.1 check form: weighted sums ≡ 0 (mod 11)
    assert sum(a * b for a, b in zip((3, 7, 6, 1, 8, 9, 4, 5, 2, 1), d[:10], strict=True)) % 11 == 0
    assert sum(a * b for a, b in zip((5, 4, 3, 2, 7, 6, 5, 4, 3, 2, 1), d, strict=True)) % 11 == 0
    assert has_valid_person_control_digits(number)
    broken = number[:10] + str((int(number[10]) + 1) % 10)
    assert not has_valid_person_control_digits(broken)


def test_person_id_kinds() -> None:
    assert person_id_kind("05903813050") is PersonIdKind.TNR  # month 90 - 80 = 10
    assert is_synthetic_person_id("05903813050")
    assert person_id_kind("45903813050") is PersonIdKind.DNR_TNR
    assert person_id_kind("05503813050") is PersonIdKind.HNR  # month + 40
    assert person_id_kind("41017000000") is PersonIdKind.DNR
    assert person_id_kind("01017000000") is PersonIdKind.FNR
    assert not is_synthetic_person_id("01017000000")
