"""Hand-written prompt templates per relation and language.

Each has a cloze that ends right before the object and a question; ``{subject}`` is the one slot.
"""

from __future__ import annotations

from interp.errors import PolylensError

SLOT = "{subject}"

TEMPLATES: dict[str, dict[str, dict[str, str]]] = {
    "capital": {
        "en": {
            "cloze": "The capital of {subject} is",
            "question": "What is the capital of {subject}?",
        },
        "fr": {
            "cloze": "La capitale du pays {subject} est",
            "question": "Quelle est la capitale du pays {subject} ?",
        },
        "de": {
            "cloze": "Die Hauptstadt von {subject} ist",
            "question": "Was ist die Hauptstadt von {subject}?",
        },
        "es": {
            "cloze": "La capital de {subject} es",
            "question": "¿Cuál es la capital de {subject}?",
        },
        "ru": {
            "cloze": "Страна: {subject}. Столица этой страны —",
            "question": "Какая столица у страны {subject}?",
        },
        "zh": {"cloze": "{subject}的首都是", "question": "{subject}的首都是哪里？"},
        "ja": {"cloze": "{subject}の首都は", "question": "{subject}の首都はどこですか？"},
        "ko": {"cloze": "{subject}의 수도는", "question": "{subject}의 수도는 어디입니까?"},
        "ar": {"cloze": "عاصمة {subject} هي", "question": "ما هي عاصمة {subject}؟"},
        "hi": {"cloze": "{subject} की राजधानी का नाम है", "question": "{subject} की राजधानी क्या है?"},
        "sw": {"cloze": "Mji mkuu wa {subject} ni", "question": "Mji mkuu wa {subject} ni upi?"},
        "th": {"cloze": "เมืองหลวงของ{subject}คือ", "question": "เมืองหลวงของ{subject}คือเมืองอะไร"},
    },
    "currency": {
        "en": {
            "cloze": "The currency of {subject} is the",
            "question": "What is the currency of {subject}?",
        },
        "fr": {
            "cloze": "La monnaie du pays {subject} est",
            "question": "Quelle est la monnaie du pays {subject} ?",
        },
        "de": {
            "cloze": "Die Währung von {subject} ist",
            "question": "Was ist die Währung von {subject}?",
        },
        "es": {
            "cloze": "La moneda de {subject} es",
            "question": "¿Cuál es la moneda de {subject}?",
        },
        "ru": {
            "cloze": "Страна: {subject}. Валюта этой страны —",
            "question": "Какая валюта у страны {subject}?",
        },
        "zh": {"cloze": "{subject}的货币是", "question": "{subject}使用什么货币？"},
        "ja": {"cloze": "{subject}の通貨は", "question": "{subject}の通貨は何ですか？"},
        "ko": {"cloze": "{subject}의 통화는", "question": "{subject}의 통화는 무엇입니까?"},
        "ar": {"cloze": "عملة {subject} هي", "question": "ما هي عملة {subject}؟"},
        "hi": {"cloze": "{subject} की मुद्रा का नाम है", "question": "{subject} की मुद्रा क्या है?"},
        "sw": {"cloze": "Sarafu ya {subject} ni", "question": "Sarafu ya {subject} ni ipi?"},
        "th": {"cloze": "สกุลเงินของ{subject}คือ", "question": "สกุลเงินของ{subject}คืออะไร"},
    },
    "language": {
        "en": {
            "cloze": "The official language of {subject} is",
            "question": "What is the official language of {subject}?",
        },
        "fr": {
            "cloze": "La langue officielle du pays {subject} est",
            "question": "Quelle est la langue officielle du pays {subject} ?",
        },
        "de": {
            "cloze": "Die Amtssprache von {subject} ist",
            "question": "Was ist die Amtssprache von {subject}?",
        },
        "es": {
            "cloze": "El idioma oficial de {subject} es",
            "question": "¿Cuál es el idioma oficial de {subject}?",
        },
        "ru": {
            "cloze": "Страна: {subject}. Официальный язык этой страны —",
            "question": "Какой официальный язык у страны {subject}?",
        },
        "zh": {"cloze": "{subject}的官方语言是", "question": "{subject}的官方语言是什么？"},
        "ja": {"cloze": "{subject}の公用語は", "question": "{subject}の公用語は何ですか？"},
        "ko": {"cloze": "{subject}의 공용어는", "question": "{subject}의 공용어는 무엇입니까?"},
        "ar": {
            "cloze": "اللغة الرسمية في {subject} هي",
            "question": "ما هي اللغة الرسمية في {subject}؟",
        },
        "hi": {
            "cloze": "{subject} की आधिकारिक भाषा का नाम है",
            "question": "{subject} की आधिकारिक भाषा क्या है?",
        },
        "sw": {
            "cloze": "Lugha rasmi ya {subject} ni",
            "question": "Lugha rasmi ya {subject} ni ipi?",
        },
        "th": {"cloze": "ภาษาราชการของ{subject}คือ", "question": "ภาษาราชการของ{subject}คือภาษาอะไร"},
    },
    "continent": {
        "en": {
            "cloze": "{subject} is a country in",
            "question": "On which continent is {subject}?",
        },
        "fr": {
            "cloze": "Le pays {subject} se trouve en",
            "question": "Sur quel continent se trouve le pays {subject} ?",
        },
        "de": {
            "cloze": "{subject} ist ein Land in",
            "question": "Auf welchem Kontinent liegt {subject}?",
        },
        "es": {
            "cloze": "{subject} es un país de",
            "question": "¿En qué continente está {subject}?",
        },
        "ru": {
            "cloze": "Страна: {subject}. Эта страна находится в части света",
            "question": "На каком континенте находится страна {subject}?",
        },
        "zh": {
            "cloze": "{subject}是一个位于以下大洲的国家：",
            "question": "{subject}位于哪个大洲？",
        },
        "ja": {"cloze": "{subject}がある大陸は", "question": "{subject}はどの大陸にありますか？"},
        "ko": {
            "cloze": "{subject}이(가) 있는 대륙은",
            "question": "{subject}은(는) 어느 대륙에 있습니까?",
        },
        "ar": {"cloze": "تقع {subject} في قارة", "question": "في أي قارة تقع {subject}؟"},
        "hi": {
            "cloze": "{subject} जिस महाद्वीप में है उसका नाम है",
            "question": "{subject} किस महाद्वीप में है?",
        },
        "sw": {"cloze": "{subject} ni nchi iliyoko", "question": "{subject} iko katika bara gani?"},
        "th": {"cloze": "{subject}ตั้งอยู่ในทวีป", "question": "{subject}ตั้งอยู่ในทวีปอะไร"},
    },
}


def fill(relation: str, lang: str, form: str, subject: str) -> str:
    """The ``form`` (cloze or question) template of ``relation`` in ``lang`` with its subject."""
    try:
        template = TEMPLATES[relation][lang][form]
    except KeyError:
        raise PolylensError(
            f"no {form} template for relation {relation!r} in {lang!r}; "
            "add one to interp/data/templates.py"
        ) from None
    return template.replace(SLOT, subject)
