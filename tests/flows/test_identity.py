"""Identity formats: the issue's vectors, normalisation, every error id, and properties.

Check characters in the tests come from reference functions written from the standards'
definitions (weights as powers of 2 mod 11 and of 3 mod 31, the check chosen so the
weighted sum comes out right), not from the weight tables the module uses.
"""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import numdb

import flows
from engine import Invalid, Registry, check_text
from flows import identity
from flows.identity import (
    CHINA,
    amount_fen,
    bank_account,
    credit_code,
    identifier,
    identifier_kind,
    mask_bank_account,
    mask_credit_code,
    mask_identifier,
    mask_mobile,
    mask_resident_id,
    mobile,
    resident_id,
)
from tests.platform import REGION_CODES, new_id_number

TODAY = date(2024, 6, 15)
CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
ID_CHECK_CHARS = "0123456789X"


def reference_id_check(body: str) -> str:
    """ISO 7064 MOD 11-2: weight 2^(i-1) mod 11 at position i from the right, the check
    character at i = 1 with weight 1; the full weighted sum is 1 mod 11; 10 is X."""
    assert len(body) == 17
    total = sum(int(ch) * pow(2, 17 - i, 11) for i, ch in enumerate(body))
    check = next(c for c in range(11) if (total + c) % 11 == 1)
    return "X" if check == 10 else str(check)


def reference_credit_check(body: str) -> str:
    """GB 32100: weight 3^(i-1) mod 31 at position i from the left; the check makes the
    sum of the 17 weighted values plus the check value 0 mod 31."""
    assert len(body) == 17
    total = sum(CREDIT_ALPHABET.index(ch) * pow(3, i, 31) for i, ch in enumerate(body))
    return next(ch for ch in CREDIT_ALPHABET if (total + CREDIT_ALPHABET.index(ch)) % 31 == 0)


def with_id_check(body: str) -> str:
    return body + reference_id_check(body)


def error_id(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(Invalid) as caught:
        fn(*args, **kwargs)
    exc = caught.value
    assert any("\u4e00" <= ch <= "\u9fff" for ch in exc.zh), "a message in Chinese"
    assert exc.en.isascii()
    assert exc.en
    assert re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*", exc.error_id)
    return exc.error_id


# -- the reference functions agree with the issue's vectors --------------------------


@pytest.mark.parametrize(("number", "check"), [
    ("360426199101010071", "1"),
    ("44011320141005001X", "X"),
    ("36042619910102009X", "3"),  # the issue's bad-check vector: X is wrong, 3 is right
    ("360426199113010079", "9"),  # the bad-date vector's check is right: only the date fails
    ("810000199408230021", "1"),  # worked by hand: sum 253, 253 % 11 = 0 -> "1"
])
def test_reference_id_check_matches_known_numbers(number: str, check: str) -> None:
    assert reference_id_check(number[:17]) == check


@pytest.mark.parametrize(("code", "check"), [
    ("91110000600037341L", "L"),
    ("91340600MA2PBM9HXD", "D"),
    ("91110000600037341N", "L"),  # the issue's bad-check vector: N is wrong, L is right
])
def test_reference_credit_check_matches_known_codes(code: str, check: str) -> None:
    assert reference_credit_check(code[:17]) == check


# -- resident ID ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean"), [
    ("360426199101010071", "360426199101010071"),
    ("44011320141005001x", "44011320141005001X"),
    ("44011320141005001X", "44011320141005001X"),
])
def test_resident_id_accepts_issue_vectors(raw: str, clean: str) -> None:
    assert resident_id(raw, today=TODAY) == clean


@pytest.mark.parametrize("raw", [
    "３６０４２６１９９１０１０１００７１",
    " 360426 19910101 0071 ",
    "\u3000360426\u300019910101\u30000071\u3000",
    "3604 2619 9101 0100 71",
    "\t360426199101010071\n",
])
def test_resident_id_normalises_full_width_and_spaces(raw: str) -> None:
    assert resident_id(raw, today=TODAY) == "360426199101010071"


def test_resident_id_normalises_full_width_x() -> None:
    assert resident_id("４４０１１３２０１４１００５００１ｘ", today=TODAY) == "44011320141005001X"
    assert resident_id("44011320141005001Ｘ", today=TODAY) == "44011320141005001X"


def test_resident_id_with_wrong_check_character_is_refused() -> None:
    assert error_id(resident_id, "36042619910102009X", today=TODAY) == "resident_id_check"


def test_resident_id_with_month_13_is_refused_for_its_date() -> None:
    assert error_id(resident_id, "360426199113010079", today=TODAY) == "resident_id_birth_date"


@pytest.mark.parametrize("raw", [
    "360426910101007", "３６０４２６９１０１０１００７", "360426 910101 007",
])
def test_fifteen_digit_legacy_number_is_refused_with_its_own_error(raw: str) -> None:
    assert error_id(resident_id, raw, today=TODAY) == "resident_id_legacy_15"


@pytest.mark.parametrize("raw", [
    "", "   ", "36042619910101007", "3604261991010100711", "36042619910101007A",
    "3604261991010X0071", "36042619910101007-", "36042619910101００7Y",
    "٣٦٠٤٢٦١٩٩١٠١٠١٠٠٧١",  # Arabic-Indic digits: digits to Python, not to GB 11643
    "36042619910101007¹",
    "36042619910101007１1",
])
def test_resident_id_with_wrong_length_or_characters_is_refused(raw: str) -> None:
    assert error_id(resident_id, raw, today=TODAY) == "resident_id_format"


@pytest.mark.parametrize("value", [None, 360426199101010071, b"360426199101010071", ["x"]])
def test_resident_id_that_is_not_text_is_refused(value: object) -> None:
    assert error_id(resident_id, value, today=TODAY) == "resident_id_format"


@pytest.mark.parametrize("number", [
    "810000199408230021",  # Hong Kong residence permit
    "820000198801010030",  # Macao
    "830000197603150048",  # Taiwan
    "931586199001010014",  # foreigner's permanent residence ID card, 2023 format
    "911000200506070121",
])
def test_residence_permits_and_foreigner_ids_are_valid(number: str) -> None:
    assert with_id_check(number[:17]) == number
    assert resident_id(number, today=TODAY) == number


def test_birth_date_after_today_is_refused_and_today_is_accepted() -> None:
    today = date(2024, 1, 1)
    born_today = with_id_check("11010520240101001")
    born_tomorrow = with_id_check("11010520240102001")
    assert resident_id(born_today, today=today) == born_today
    assert error_id(resident_id, born_tomorrow, today=today) == "resident_id_birth_date"
    assert resident_id(born_tomorrow, today=date(2024, 1, 2)) == born_tomorrow


def test_birth_date_defaults_to_the_real_today_in_china() -> None:
    born = datetime.now(CHINA).date() + timedelta(days=1)
    future = with_id_check(f"110105{born:%Y%m%d}001")
    assert error_id(resident_id, future) == "resident_id_birth_date"
    assert resident_id("360426199101010071") == "360426199101010071"


def test_a_step_checks_the_birth_date_against_the_engine_clock_in_china() -> None:
    born_jan_2 = with_id_check("11010520240102001")
    # 17:00 UTC on 1 January is 01:00 on 2 January in Beijing: born today, accepted.
    assert resident_id(born_jan_2, now=datetime(2024, 1, 1, 17, 0, tzinfo=UTC)) == born_jan_2
    # 15:00 UTC is still 1 January there: born tomorrow, refused, whatever the real date.
    assert error_id(resident_id, born_jan_2,
                    now=datetime(2024, 1, 1, 15, 0, tzinfo=UTC)) == "resident_id_birth_date"


def test_birth_date_before_1900_is_refused() -> None:
    assert resident_id(with_id_check("11010519000101001"), today=TODAY)
    assert error_id(resident_id, with_id_check("11010518991231001"),
                    today=TODAY) == "resident_id_birth_date"


@pytest.mark.parametrize(("year", "leap"), [
    (2000, True), (2004, True), (2020, True), (1900, False), (2023, False), (2100, False),
])
def test_february_29_is_valid_only_in_leap_years(year: int, leap: bool) -> None:
    number = with_id_check(f"110105{year}0229001")
    today = date(2200, 1, 1)
    if leap:
        assert resident_id(number, today=today) == number
    else:
        assert error_id(resident_id, number, today=today) == "resident_id_birth_date"


@pytest.mark.parametrize("date_part", ["00000000", "19910001", "19910100", "19910431",
                                       "19911301", "19919999"])
def test_impossible_birth_dates_are_refused(date_part: str) -> None:
    number = with_id_check(f"110105{date_part}001")
    assert error_id(resident_id, number, today=TODAY) == "resident_id_birth_date"


_birth_dates = st.dates(min_value=date(1900, 1, 1), max_value=TODAY)
_PROVINCES = sorted({code[:2] for code in REGION_CODES})
_real_regions = st.one_of(
    st.sampled_from(REGION_CODES),
    # A foreigner's permanent residence ID: 9, a province, any nationality code.
    st.builds(lambda province, nation: f"9{province}{nation}", st.sampled_from(_PROVINCES),
              st.from_regex(r"[0-9]{3}", fullmatch=True)),
)
_id_bodies = st.builds(
    lambda region, born, seq: f"{region}{born:%Y%m%d}{seq}",
    _real_regions,
    _birth_dates,
    st.from_regex(r"[0-9]{3}", fullmatch=True),
)


@given(_id_bodies)
def test_any_id_body_with_its_check_character_is_valid_and_with_another_is_not(
        body: str) -> None:
    right = reference_id_check(body)
    assert resident_id(body + right, today=TODAY) == body + right
    assert resident_id(body + right.lower(), today=TODAY) == body + right
    for wrong in ID_CHECK_CHARS.replace(right, ""):
        assert error_id(resident_id, body + wrong, today=TODAY) == "resident_id_check"


@pytest.mark.parametrize("region", ["000000", "999999", "110199", "119999", "123456",
                                    "660000", "840000", "900000", "999000", "991234"])
def test_an_id_number_whose_region_is_no_real_place_is_refused(region: str) -> None:
    number = with_id_check(f"{region}19910101007")
    assert error_id(resident_id, number, today=TODAY) == "resident_id_region"


@pytest.mark.parametrize("region", [
    "110103",  # 崇文区, merged into 东城区 in 2010: its people keep their numbers
    "310103",  # 卢湾区, until 2011
    "440524",  # 潮阳县, 1983-1993
    "500221",  # 长寿县, 1997-2001
    "469034",  # 陵水, a code of the 2000s that the package's list lacks
    "110000", "650102", "710000",
])
def test_codes_of_places_that_existed_once_stay_valid(region: str) -> None:
    number = with_id_check(f"{region}19910101007")
    assert resident_id(number, today=TODAY) == number


def test_the_region_is_checked_before_the_date_and_the_check_character() -> None:
    assert error_id(resident_id, "000000199113010079", today=TODAY) == "resident_id_region"
    assert error_id(resident_id, "00000019910101007X", today=TODAY) == "resident_id_region"


@given(st.from_regex(r"[0-8][0-9]{5}", fullmatch=True), _birth_dates,
       st.from_regex(r"[0-9]{3}", fullmatch=True))
def test_any_region_the_division_codes_know_is_accepted_and_any_other_refused_for_it(
        region: str, born: date, seq: str) -> None:
    number = with_id_check(f"{region}{born:%Y%m%d}{seq}")
    try:
        outcome = "valid" if resident_id(number, today=TODAY) == number else "changed"
    except Invalid as exc:
        outcome = exc.error_id
    known = any("county" in props for _, props in numdb.get("cn/loc").info(region))
    assert outcome == "valid" if known else outcome in ("valid", "resident_id_region")


def test_the_test_platform_makes_id_numbers_of_real_regions() -> None:
    for region in REGION_CODES:
        assert resident_id(with_id_check(f"{region}19910101007"), today=TODAY)
    assert len({new_id_number()[:6] for _ in range(400)}) > len(REGION_CODES) // 2


# -- unified social credit code -------------------------------------------------------


@pytest.mark.parametrize("code", ["91110000600037341L", "91340600MA2PBM9HXD"])
def test_credit_code_accepts_issue_vectors(code: str) -> None:
    assert credit_code(code) == code


@pytest.mark.parametrize("raw", [
    "91340600ma2pbm9hxd", " 9134 0600 MA2P BM9H XD ", "９１３４０６００ＭＡ２ＰＢＭ９ＨＸＤ",
    "\u300091340600ma2PBM9HXd\u3000",
])
def test_credit_code_normalises_case_full_width_and_spaces(raw: str) -> None:
    assert credit_code(raw) == "91340600MA2PBM9HXD"


def test_credit_code_with_wrong_check_character_is_refused() -> None:
    assert error_id(credit_code, "91110000600037341N") == "credit_code_check"


@pytest.mark.parametrize("raw", ["", "91110000600037341", "91110000600037341LL",
                                 "911100006000373", None, 91110000600037341])
def test_credit_code_of_wrong_length_is_refused(raw: object) -> None:
    assert error_id(credit_code, raw) == "credit_code_length"


@pytest.mark.parametrize("letter", list("IOZSV"))
def test_credit_code_with_letters_outside_the_alphabet_is_refused(letter: str) -> None:
    code = "9111000060003734" + letter + "L"
    with pytest.raises(Invalid) as caught:
        credit_code(code)
    assert caught.value.error_id == "credit_code_charset"
    for excluded in "IOZSV":
        assert excluded in caught.value.zh
        assert excluded in caught.value.en


@pytest.mark.parametrize("raw", ["91110000600037341-", "9111000060003734١L", "91110000600037341Ł"])
def test_credit_code_with_other_characters_is_refused(raw: str) -> None:
    assert error_id(credit_code, raw) == "credit_code_charset"


@pytest.mark.parametrize("code", [
    "Y1110000MA0000000U", "N2440300MA5D00000H", "A1110000000000001G",
    "12100000400000000W", "53100000500021676K",
])
def test_credit_codes_from_other_registration_authorities_are_valid(code: str) -> None:
    assert reference_credit_check(code[:17]) == code[17]
    assert credit_code(code) == code


_credit_bodies = st.text(alphabet=CREDIT_ALPHABET, min_size=17, max_size=17)


@given(_credit_bodies)
def test_any_credit_body_with_its_check_character_is_valid_and_with_another_is_not(
        body: str) -> None:
    right = reference_credit_check(body)
    assert credit_code(body + right) == body + right
    assert credit_code((body + right).lower()) == body + right
    for wrong in CREDIT_ALPHABET.replace(right, ""):
        assert error_id(credit_code, body + wrong) == "credit_code_check"


# -- mobile, bank account --------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    "13812345678", "+8613812345678", "8613812345678", "008613812345678",
    "+86 138 1234 5678", "138-1234-5678", "+86-138-1234-5678", "１３８１２３４５６７８",
    "＋８６ １３８１２３４５６７８", "\u3000138\u30001234\u30005678",
])
def test_mobile_accepts_prefixes_spaces_hyphens_and_full_width(raw: str) -> None:
    assert mobile(raw) == "13812345678"


@pytest.mark.parametrize("number", ["13000000000", "14512345678", "19912345678"])
def test_mobile_accepts_every_13_to_19_block(number: str) -> None:
    assert mobile(number) == number


@pytest.mark.parametrize("raw", [
    "12812345678",        # 12 is no mainland mobile block
    "+8612812345678",
    "1381234567",         # 10 digits
    "138123456789",       # 12 digits
    "+861381234567",      # prefix before 10 digits: not stripped
    "86138123456789",     # prefix before 12 digits
    "+85261234567",       # Hong Kong
    "11012345678", "03812345678", "", "abc", None, 13812345678,
    "138１２３４５６７x",
    "١٣٨١٢٣٤٥٦٧٨",
])
def test_mobile_that_is_not_a_mainland_number_is_refused(raw: object) -> None:
    assert error_id(mobile, raw) == "mobile_invalid"


@pytest.mark.parametrize(("raw", "clean"), [
    ("12345678", "12345678"),
    ("6222 0212 3456 7890 123", "6222021234567890123"),
    ("６２２２０２１２３４５６７８９０", "6222021234567890"),
    ("1" * 30, "1" * 30),
])
def test_bank_account_keeps_digits_without_spaces(raw: str, clean: str) -> None:
    assert bank_account(raw) == clean


@pytest.mark.parametrize("raw", ["1234567", "1" * 31, ""])
def test_bank_account_of_wrong_length_is_refused(raw: str) -> None:
    assert error_id(bank_account, raw) == (
        "bank_account_format" if not raw else "bank_account_length")


@pytest.mark.parametrize("raw", ["6222-0212-3456", "62220212345X", "١٢٣٤٥٦٧٨٩", None, 12345678])
def test_bank_account_with_other_characters_is_refused(raw: object) -> None:
    assert error_id(bank_account, raw) == "bank_account_format"


# -- amounts ----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "fen"), [
    ("0.5", 50), ("50", 5000), ("0.01", 1), ("1.20", 120), ("0", 0), ("0.00", 0),
    ("12.34", 1234), (" 0.35 ", 35), ("００.３５", 35), ("007", 700),
    (50, 5000), (0, 0),
    ("999999999999999.99", 99999999999999999),
])
def test_amount_parses_yuan_into_fen(raw: object, fen: int) -> None:
    result = amount_fen(raw)
    assert result == fen
    assert type(result) is int


@pytest.mark.parametrize(("raw", "error"), [
    ("-0.01", "amount_negative"),
    ("-5", "amount_negative"),
    (-1, "amount_negative"),
    ("0.011", "amount_decimals"),
    ("0.010", "amount_decimals"),
    ("1e-2", "amount_format"),
    ("1E2", "amount_format"),
    ("NaN", "amount_format"),
    ("nan", "amount_format"),
    ("inf", "amount_format"),
    ("Infinity", "amount_format"),
    ("-inf", "amount_format"),
    ("1,000", "amount_format"),
    ("1 000", "amount_format"),
    ("+1", "amount_format"),
    ("0x10", "amount_format"),
    (".5", "amount_format"),
    ("5.", "amount_format"),
    ("1.2.3", "amount_format"),
    ("¥5", "amount_format"),
    ("5元", "amount_format"),
    ("٥", "amount_format"),
    ("1_000", "amount_format"),
    ("", "amount_empty"),
    (" ", "amount_empty"),
    ("\u3000", "amount_empty"),
    (True, "amount_type"),
    (False, "amount_type"),
    (None, "amount_type"),
    (["1"], "amount_type"),
    (0.5, "amount_not_string"),
    (1.0, "amount_not_string"),
    (float("nan"), "amount_not_string"),
    ("1000000000000000", "amount_too_large"),
    (10**15, "amount_too_large"),
])
def test_amount_refuses_what_is_not_a_plain_yuan_amount(raw: object, error: str) -> None:
    assert error_id(amount_fen, raw) == error


def test_amount_with_thousands_of_leading_zeros_parses() -> None:
    assert amount_fen("0" * 5000 + "1.5") == 150


@st.composite
def _fen_as_yuan(draw: st.DrawFn) -> tuple[int, str]:
    fen = draw(st.integers(min_value=0, max_value=10**9))
    yuan, cents = divmod(fen, 100)
    forms = [f"{yuan}.{cents:02d}"]
    if cents % 10 == 0:
        forms.append(f"{yuan}.{cents // 10}")
    if cents == 0:
        forms.append(str(yuan))
    return fen, draw(st.sampled_from(forms))


@given(_fen_as_yuan())
def test_any_fen_written_as_yuan_parses_back(case: tuple[int, str]) -> None:
    fen, text = case
    assert amount_fen(text) == fen


# -- sign-in identifiers -----------------------------------------------------------------


@pytest.mark.parametrize(("raw", "clean", "kind"), [
    ("13812345678", "13812345678", "mobile"),
    ("+86 138-1234-5678", "13812345678", "mobile"),
    ("008613812345678", "13812345678", "mobile"),
    ("8613812345678", "13812345678", "mobile"),
    ("＋８６ １３８１２３４５６７８", "13812345678", "mobile"),
    ("44011320141005001x", "44011320141005001X", "resident_id"),
    ("４４０１１３ ２０１４１００５ ００１ｘ", "44011320141005001X", "resident_id"),
    ("Wang.Xiao-Ming", "wang.xiao-ming", "login_name"),
    ("ＷＡＮＧ_１", "wang_1", "login_name"),
    (" wang 1 ", "wang1", "login_name"),
    # Neither a mainland mobile number nor an ID number: kept as typed, found nowhere.
    ("12812345678", "12812345678", "login_name"),
    ("36042619910101007", "36042619910101007", "login_name"),
])
def test_an_identifier_is_normalised_as_what_it_is(raw: str, clean: str, kind: str) -> None:
    assert identifier(raw) == clean
    assert identifier_kind(clean) == kind
    assert identifier(clean) == clean


def test_an_identifier_that_is_not_text_is_refused() -> None:
    assert error_id(identifier, 13812345678) == "identifier_invalid"


_phones = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
_FULL = {ord(c): ord(c) + 0xFEE0 for c in "0123456789+X"}


@given(_phones, st.sampled_from(["{}", "+86{}", "+86 {}", "0086{}", "86{}", "{0} {1} {2}",
                                 "{0}-{1}-{2}", "\u3000{}\u3000"]), st.booleans())
def test_every_spelling_of_a_mobile_number_is_one_identifier(
        phone: str, spelling: str, full_width: bool) -> None:
    typed = spelling.format(phone[:3], phone[3:7], phone[7:]) if "{0}" in spelling \
        else spelling.format(phone)
    if full_width:
        typed = typed.translate(_FULL)
    assert identifier(typed) == phone


# -- masks -------------------------------------------------------------------------------


def test_masks_show_what_the_rules_allow() -> None:
    assert mask_resident_id("360426199101010071") == "360***********0071"
    assert mask_resident_id("44011320141005001x") == "440***********001X"
    assert mask_mobile("13812345678") == "138****5678"
    assert mask_mobile("+86 138-1234-5678") == "138****5678"
    assert mask_bank_account("6222 0212 3456 7890 123") == "***************0123"
    assert mask_credit_code("91110000600037341L") == "91************341L"


@pytest.mark.parametrize("mask", [mask_resident_id, mask_mobile, mask_bank_account,
                                  mask_credit_code])
@pytest.mark.parametrize("value", [None, "", "1", "123", "1234567", True, 1.5, b"138",
                                   object(), ["13812345678"], "\x00\n\r<script>", "１２３"])
def test_masks_of_malformed_input_do_not_raise_or_show_a_fragment(mask: Any,
                                                                  value: object) -> None:
    out = mask(value)
    assert isinstance(out, str)
    assert set(out) <= {"*"}


@pytest.mark.parametrize(("raw", "shown"), [
    ("+86 138-1234-5678", "138****5678"),
    ("44011320141005001x", "440***********001X"),
    ("Wang.Xiao", "w********"),
    ("ＷＡＮＧ", "w***"),
    ("abc", "***"),
])
def test_an_identifier_is_masked_as_what_it_is(raw: str, shown: str) -> None:
    assert mask_identifier(raw) == shown


@given(st.one_of(_phones, _id_bodies.map(with_id_check), st.text(max_size=70)))
def test_a_masked_identifier_never_shows_a_phone_or_id_number_whole(value: str) -> None:
    out = mask_identifier(value)
    assert len([ch for ch in out if ch != "*"]) <= 7
    normal = identifier(value)
    if normal.strip("*"):
        assert out != normal


def test_masks_accept_integers() -> None:
    assert mask_mobile(13812345678) == "138****5678"
    assert mask_bank_account(12345678) == "****5678"


_MASKS = [(mask_resident_id, 3, 4, ID_CHECK_CHARS), (mask_mobile, 3, 4, "0123456789"),
          (mask_bank_account, 0, 4, "0123456789"), (mask_credit_code, 2, 4, CREDIT_ALPHABET)]


@pytest.mark.parametrize(("mask", "head", "tail", "alphabet"), _MASKS)
@given(value=st.one_of(st.text(), st.text(alphabet="0123456789xX +-\u3000８", max_size=40)))
def test_masks_never_show_more_than_head_and_tail(mask: Any, head: int, tail: int,
                                                  alphabet: str, value: str) -> None:
    out = mask(value)
    shown = [ch for ch in out if ch != "*"]
    assert len(shown) <= head + tail
    assert set(shown) <= set(alphabet)
    assert set(out[head:len(out) - tail]) <= {"*"}


@given(_id_bodies)
def test_masked_id_shows_its_first_3_and_last_4(body: str) -> None:
    number = with_id_check(body)
    assert mask_resident_id(number) == number[:3] + "*" * 11 + number[-4:]


# -- registration ------------------------------------------------------------------------


def test_register_names_every_validator() -> None:
    registry = Registry()
    identity.register(registry)
    assert set(registry.validators) == {"resident_id", "credit_code", "mobile",
                                        "bank_account", "amount_fen", "identifier"}
    assert registry.personal == {"resident_id", "mobile", "bank_account", "identifier"}
    assert registry.validators["resident_id"]("44011320141005001x") == "44011320141005001X"
    assert registry.validators["credit_code"]("91110000600037341l") == "91110000600037341L"
    assert registry.validators["mobile"]("+8613812345678") == "13812345678"
    assert registry.validators["bank_account"]("1234 5678") == "12345678"
    assert registry.validators["amount_fen"]("0.35") == 35
    assert registry.validators["identifier"]("＋86 138-1234-5678") == "13812345678"


def test_lint_refuses_a_field_of_the_platforms_personal_formats_in_clear() -> None:
    registry = Registry()
    flows.register(registry)
    for fmt in ("resident_id", "mobile", "identifier", "bank_account"):
        text = textwrap.dedent(f"""\
            flows:
              f:
                title: {{zh: 甲, en: F}}
                initial: a
                states:
                  a:
                    fields:
                      x: {{format: {fmt}, label: {{zh: 甲, en: X}}}}
                  b: {{final: true}}
                transitions:
                  - {{trigger: go, source: a, dest: b}}
            """)
        diags = check_text(text, "flows.yaml", registry)[1]
        assert [(d.line, d.col) for d in diags] == [(8, 23)], (fmt, diags)
        assert "carries personal data" in diags[0].message
    assert {"resident_id", "mobile", "identifier", "bank_account"} <= registry.personal
    assert not {"credit_code", "text", "login_name", "amount_fen"} & registry.personal
