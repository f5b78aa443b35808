"""Identity formats: resident ID, credit code, mobile, bank account, money; masks for display.

Every validator takes what a client typed, returns the normalised value or raises
``engine.Invalid`` with a stable error id. Masks never raise: they are used on whatever
reaches a page or a log line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone

from stdnum import numdb

from engine import Invalid, Registry

# Full-width ASCII (U+FF01..U+FF5E: ０-９, Ａ-Ｚ, ａ-ｚ, ＋, －, ．) typed with a Chinese IME.
# An explicit table, not NFKC: NFKC would also turn ², ① or ﹣ into digits and signs.
_FULL_WIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}

# ``[0-9]``, never ``\d``: in a str pattern ``\d`` also matches Arabic-Indic and other digits.
_RESIDENT_ID = re.compile(r"[0-9]{17}[0-9X]")
_LEGACY_ID = re.compile(r"[0-9]{15}")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_EARLIEST_BIRTH = date(1900, 1, 1)

# Region codes (GB/T 2260) that python-stdnum's list lacks. 830000: Taiwan residents'
# residence permits (Hong Kong's 810000 and Macao's 820000 are in the list; GB/T 2260
# itself gives Taiwan 71). The others are codes of GB/T 2260 revisions that python-stdnum
# 1.20 listed (from the GB2260 revision files) and its later, Wikipedia-based list lacks.
_EXTRA_REGIONS = frozenset({
    "830000", "370903", "460321", "460322", "460323", "469034", "469035", "469036",
    "469037", "469038", "469039", "620201"})

_CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_VALUE = {ch: i for i, ch in enumerate(_CREDIT_ALPHABET)}
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_MOBILE_PREFIX = re.compile(r"(?:\+86|0086|86)([0-9]{11})")
_BANK_ACCOUNT = re.compile(r"[0-9]+")

_AMOUNT = re.compile(r"([0-9]+)(?:\.([0-9]{1,2}))?")
_AMOUNT_TOO_PRECISE = re.compile(r"[0-9]+\.[0-9]{3,}")
_AMOUNT_MAX_YUAN_DIGITS = 15  # below 10^15 yuan: no real payment, and no huge int() parses

# China has one time zone and no daylight saving: dates are as they are there.
CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")


def _compact(value: str) -> str:
    """Map full-width ASCII to ASCII and drop every space, also U+3000 and inner ones."""
    return "".join(ch for ch in value.translate(_FULL_WIDTH) if not ch.isspace())


# -- resident identity number (GB 11643) ------------------------------------------


def _id_check_char(body: str) -> str:
    """Return the MOD 11-2 check character for 17 ASCII digits."""
    total = sum(int(ch) * w for ch, w in zip(body, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


@functools.lru_cache(maxsize=8192)
def _known_region(code: str) -> bool:
    """Tell whether six digits are a county, city or province code of GB/T 2260, past or present.

    An ID number keeps the code of the place that issued it, also after that place was
    merged or renamed: a code valid in any revision since 1980 stays valid. The codes
    come from python-stdnum (LGPL-2.1+), whose list is kept from the Wikipedia tables
    of every revision, each code with the years it was in use (ignored here).
    """
    if code in _EXTRA_REGIONS:
        return True
    return any("county" in props for _, props in numdb.get("cn/loc").info(code))


def _real_region(number: str) -> bool:
    """The region part of an 18-character ID number names a real place.

    Foreigners' permanent residence ID cards (2023 format) start with 9, then the
    issuing province's two digits and a three-digit nationality code; only the
    province is checked there.
    """
    if number.startswith("9"):
        return _known_region(number[1:3] + "0000")
    return _known_region(number[:6])


def resident_id(value: object, today: date | None = None, *,
                now: datetime | None = None) -> str:
    """Check an 18-character citizen ID (also residence permits) and return it normalised."""
    number = _compact(value).upper() if isinstance(value, str) else ""
    if _LEGACY_ID.fullmatch(number):
        raise Invalid("resident_id_legacy_15",
                      "不再接受15位旧身份证号码，请填写18位公民身份号码",
                      "15-digit ID numbers are no longer accepted: "
                      "enter the 18-character citizen ID number")
    if not _RESIDENT_ID.fullmatch(number):
        raise Invalid("resident_id_format",
                      "身份证号码应为18位：17位数字加1位数字或X",
                      "An ID number has 18 characters: 17 digits, then a digit or X")
    if not _real_region(number):
        raise Invalid("resident_id_region",
                      "身份证号码前6位（地区码）不是有效的行政区划代码，请核对是否输错",
                      "The first six digits of the ID number (the region code) are not a "
                      "real administrative division code: please check for a typo")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        born = None
    if today is None:
        # The engine's clock when a step checks it; the date as it is in China (UTC+8).
        today = (now or datetime.now(UTC)).astimezone(CHINA).date()
    if born is None or not _EARLIEST_BIRTH <= born <= today:
        raise Invalid("resident_id_birth_date",
                      "身份证号码中的出生日期（第7-14位）无效：须为1900年1月1日至今的真实日期",
                      "The birth date in the ID number (characters 7-14) is not a real date "
                      "between 1900-01-01 and today")
    if _id_check_char(number[:17]) != number[17]:
        raise Invalid("resident_id_check",
                      "身份证号码校验位不正确，请核对是否输错",
                      "The ID number's check character does not match: please check for a typo")
    return number


# -- unified social credit code (GB 32100) ----------------------------------------


def _credit_check_char(body: str) -> str:
    """Return the MOD 31 check character for 17 characters of the credit-code alphabet."""
    total = sum(_CREDIT_VALUE[ch] * w for ch, w in zip(body, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_ALPHABET[(31 - total % 31) % 31]


def credit_code(value: object) -> str:
    """Check an 18-character unified social credit code and return it upper-cased."""
    code = _compact(value).upper() if isinstance(value, str) else ""
    if len(code) != 18:
        raise Invalid("credit_code_length",
                      "统一社会信用代码应为18位",
                      "A unified social credit code has 18 characters")
    if any(ch not in _CREDIT_VALUE for ch in code):
        raise Invalid("credit_code_charset",
                      "统一社会信用代码只含数字和大写字母，不含 I、O、Z、S、V",
                      "A unified social credit code has only digits and capital letters, "
                      "never I, O, Z, S or V")
    if _credit_check_char(code[:17]) != code[17]:
        raise Invalid("credit_code_check",
                      "统一社会信用代码校验位不正确，请核对是否输错",
                      "The credit code's check character does not match: please check for a typo")
    return code


# -- mainland mobile number, bank account -----------------------------------------


def _mobile_digits(value: str) -> str:
    """Drop spaces and hyphens and a +86 / 0086 / 86 country prefix before 11 digits."""
    number = _compact(value).replace("-", "")
    prefixed = _MOBILE_PREFIX.fullmatch(number)
    return prefixed.group(1) if prefixed else number


# (error id, zh, en): also what an action that reads a phone declares it may refuse with.
MOBILE_INVALID = ("mobile_invalid", "请填写中国大陆手机号码：11位数字，以13-19开头",
                  "Enter a mainland China mobile number: 11 digits starting with 13-19")


def mobile(value: object) -> str:
    """Check a mainland China mobile number and return its 11 digits."""
    number = _mobile_digits(value) if isinstance(value, str) else ""
    if not _MOBILE.fullmatch(number):
        raise Invalid(*MOBILE_INVALID)
    return number


def bank_account(value: object) -> str:
    """Check a bank account number and return its digits without spaces."""
    number = _compact(value) if isinstance(value, str) else ""
    if not _BANK_ACCOUNT.fullmatch(number):
        raise Invalid("bank_account_format",
                      "银行账号只能包含数字",
                      "A bank account number has digits only")
    if not 8 <= len(number) <= 30:
        raise Invalid("bank_account_length",
                      "银行账号应为8-30位数字",
                      "A bank account number has 8 to 30 digits")
    return number


# -- what a person types to sign in ------------------------------------------------

MOBILE_KIND = "mobile"
RESIDENT_ID_KIND = "resident_id"
LOGIN_NAME_KIND = "login_name"


def identifier(value: object) -> str:
    """Normalise what a person types to sign in: a mobile number, an ID number or a login name.

    Every spelling of one identifier comes out the same: full-width characters and
    spaces as anywhere, a mobile number as its 11 digits (without +86, 0086 or
    hyphens), an ID number upper-cased, anything else lower-cased as login names are
    compared (``accounts.login_key``). Nothing well-typed is refused: text that names no
    account simply finds none, and answers as any unknown identifier does.
    """
    if not isinstance(value, str):
        raise Invalid("identifier_invalid", "请填写身份证号码、手机号码或登录名",
                      "Enter an ID number, a mobile number or a login name")
    return normalise_identifier(value)


def normalise_identifier(value: str) -> str:
    """Normalise a typed identifier as ``identifier`` does; text is never refused."""
    text = _compact(value)
    digits = _mobile_digits(text)
    if _MOBILE.fullmatch(digits):
        return digits
    upper = text.upper()
    if _RESIDENT_ID.fullmatch(upper):
        return upper
    return text.lower()


def identifier_kind(normalised: str) -> str:
    """Say what a normalised identifier can only be: a mobile number, an ID number or a
    login name (login names start with a letter, so the three never overlap)."""
    if _MOBILE.fullmatch(normalised):
        return MOBILE_KIND
    if _RESIDENT_ID.fullmatch(normalised):
        return RESIDENT_ID_KIND
    return LOGIN_NAME_KIND


# -- money --------------------------------------------------------------------------


def _amount_error(error_id: str) -> Invalid:
    """Build the Invalid for one of the amount's error ids."""
    zh, en = {
        "amount_not_string": ("请以文本形式提交金额，例如 \"0.35\"",
                              "Send the amount as a string such as \"0.35\", not a number "
                              "with a fraction"),
        "amount_type": ("金额应为文本，例如 \"0.35\"",
                        "The amount must be a string such as \"0.35\""),
        "amount_empty": ("请填写金额", "Enter an amount"),
        "amount_negative": ("金额不能为负数", "The amount cannot be negative"),
        "amount_decimals": ("金额最多保留两位小数（精确到分）",
                            "An amount has at most two decimal places (fen)"),
        "amount_too_large": ("金额过大", "The amount is too large"),
        "amount_format": ("金额格式不正确：请只填数字，可带小数点，例如 12.34"
                          "（不要加千位分隔符、正负号或科学计数法）",
                          "Write the amount in yuan with digits and an optional decimal point, "
                          "e.g. 12.34 (no thousands separators, signs or exponents)"),
    }[error_id]
    return Invalid(error_id, zh, en)


def amount_fen(value: object) -> int:
    """Parse an amount in yuan, given as a string or a whole number, into integer fen."""
    # bool before int: True is an int; float is refused outright, as 0.1 is not 0.1.
    if isinstance(value, bool):
        raise _amount_error("amount_type")
    if isinstance(value, float):
        raise _amount_error("amount_not_string")
    if isinstance(value, int):
        if value < 0:
            raise _amount_error("amount_negative")
        if value >= 10**_AMOUNT_MAX_YUAN_DIGITS:
            raise _amount_error("amount_too_large")
        return value * 100
    if not isinstance(value, str):
        raise _amount_error("amount_type")
    text = value.translate(_FULL_WIDTH).strip()
    if not text:
        raise _amount_error("amount_empty")
    number = text.removeprefix("-")
    parsed = _AMOUNT.fullmatch(number)
    too_precise = _AMOUNT_TOO_PRECISE.fullmatch(number)
    if parsed is None and too_precise is None:
        raise _amount_error("amount_format")
    if number != text:
        raise _amount_error("amount_negative")
    if parsed is None:
        raise _amount_error("amount_decimals")
    # Leading zeros go before int(): it refuses strings over 4300 digits, zeros included.
    yuan, fen = parsed.group(1).lstrip("0"), parsed.group(2) or ""
    if len(yuan) > _AMOUNT_MAX_YUAN_DIGITS:
        raise _amount_error("amount_too_large")
    return int(yuan or "0") * 100 + int(fen.ljust(2, "0"))


# -- masks ----------------------------------------------------------------------------


_DIGITS = frozenset("0123456789")
_ID_CHARS = _DIGITS | {"X"}
_CREDIT_CHARS = frozenset(_CREDIT_ALPHABET)
_LOGIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


def _mask(text: str, head: int, tail: int, shortest: int, alphabet: frozenset[str]) -> str:
    """Keep ``head`` and ``tail`` characters of a long enough text, star the rest.

    Shorter than a well-formed value: all stars, so a fragment is never shown whole.
    Only characters of the format's own alphabet are ever shown, so a mask cannot
    carry anything odd into a page or a log line.
    """
    if len(text) < shortest:
        return "*" * len(text)
    shown = [ch if ch in alphabet else "*" for ch in text]
    middle = len(text) - head - tail
    return "".join(shown[:head]) + "*" * middle + "".join(shown[len(text) - tail:])


def _as_text(value: object) -> str | None:
    """Return a str or int as text; None for anything else, whose str() could even raise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _masked(value: object, mask: Callable[[str], str]) -> str:
    """Apply ``mask`` to text; show nothing of None and of values of other types."""
    if value is None:
        return ""
    text = _as_text(value)
    return "****" if text is None else mask(text)


def mask_resident_id(value: object) -> str:
    """Show the first 3 and last 4 characters of an ID number: 360***********0071."""
    return _masked(value, lambda text: _mask(_compact(text).upper(), 3, 4, 15, _ID_CHARS))


def mask_mobile(value: object) -> str:
    """Show the first 3 and last 4 digits of a mobile number: 138****5678."""
    return _masked(value, lambda text: _mask(_mobile_digits(text), 3, 4, 11, _DIGITS))


def mask_bank_account(value: object) -> str:
    """Show the last 4 digits of a bank account number: ************5678."""
    return _masked(value, lambda text: _mask(_compact(text), 0, 4, 8, _DIGITS))


def mask_credit_code(value: object) -> str:
    """Show the first 2 and last 4 characters of a credit code: 91************341L."""
    return _masked(value, lambda text: _mask(_compact(text).upper(), 2, 4, 18, _CREDIT_CHARS))


def mask_identifier(value: object) -> str:
    """Mask a sign-in identifier as what it is: 138****5678, 360***********0071, or a
    login name's first character (u*********): none of them is ever shown whole."""

    def mask(text: str) -> str:
        normal = identifier(text)
        kind = identifier_kind(normal)
        if kind == MOBILE_KIND:
            return _mask(normal, 3, 4, 11, _DIGITS)
        if kind == RESIDENT_ID_KIND:
            return _mask(normal, 3, 4, 15, _ID_CHARS)
        return _mask(normal, 1, 0, 4, _LOGIN_CHARS)

    return _masked(value, mask)


def register(registry: Registry) -> None:
    """Register the validators under the format names flows.yaml uses.

    ``personal``: their values are ID or phone numbers, or may be; lint makes every
    field of those formats sensitive or secret.
    """
    registry.validator("resident_id", dated=True, personal=True)(resident_id)
    registry.validator("credit_code")(credit_code)
    registry.validator("mobile", personal=True)(mobile)
    registry.validator("bank_account", personal=True)(bank_account)
    registry.validator("identifier", personal=True)(identifier)
    registry.validator("amount_fen")(amount_fen)
