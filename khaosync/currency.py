"""Currencies: which codes are money an order can be paid in, and their minor units.

One list for the whole pipeline: pull flags an ERP order in any other code, map refuses to
build an Ometria record in one, so a code cannot pass one stage and fail the next unexplained.
(The sandbox's Ometria emulator keeps its own copy on purpose: it stands for the other side.)
"""

from __future__ import annotations

from decimal import Decimal

# ISO 4217 codes in circulation. Fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW),
# precious metals, SDR and bond units, and the test codes XTS/XXX are not money a retailer's
# order is paid in: on an order they can only mean a broken export.
CURRENCIES: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
    MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
    SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD
    TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """.split()
)

# Decimal places of the minor unit where ISO 4217 says other than 2.
_MINOR_UNITS: dict[str, int] = {
    "BHD": 3, "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "IQD": 3, "ISK": 0, "JOD": 3, "JPY": 0, "KMF": 0,
    "KRW": 0, "KWD": 3, "LYD": 3, "OMR": 3, "PYG": 0, "RWF": 0, "TND": 3, "UGX": 0, "VND": 0, "VUV": 0,
    "XAF": 0, "XOF": 0, "XPF": 0,
}


def is_currency(code: str) -> bool:
    return code in CURRENCIES


def minor_units(currency: str) -> int:
    """Decimal places of the currency's minor unit (2 unless ISO 4217 says otherwise)."""
    return _MINOR_UNITS.get(currency, 2)


def penny(currency: str) -> Decimal:
    """The currency's smallest unit: ``Decimal("0.01")`` for GBP, ``Decimal("1")`` for JPY."""
    return Decimal(1).scaleb(-minor_units(currency))


def money_text(value: Decimal, currency: str | None) -> str:
    """An amount as people read money: at least the currency's decimals (``903.60``, ``0.00``,
    ``JPY 1200``), never fewer, and never rounded (an amount with more places keeps them)."""
    places = minor_units(currency) if currency else 2
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -places:
        value = value.quantize(Decimal(1).scaleb(-places))
    return format(value, "f")
