"""Build ``facts.jsonl`` and ``boundary.jsonl`` from the Unicode CLDR (through babel).

Run ``python -m interp.data.build_cldr`` to regenerate; each fact records the CLDR and babel
versions it came from, and ``polylens data check`` recomputes every CLDR-derived field when the
installed babel has that CLDR (and says it skipped the comparison otherwise).

What is hand-written here, and marked so in the files: which capital belongs to which country (as
a time-zone id whose exemplar city is the capital), the continent of each country (names then
come from CLDR), the invented entities, and the future-event questions.
"""

from __future__ import annotations

import json
from pathlib import Path

import babel
from babel import Locale
from babel.core import get_cldr_version
from babel.dates import get_timezone_location
from babel.languages import get_official_languages
from babel.numbers import get_currency_name, get_territory_currencies

from interp.data.languages import DEFAULT_LANGS, foreign_letters
from interp.data.templates import fill
from interp.storage.files import atomic_write_text

DATA_DIR = Path(__file__).parent

# Country -> time zone whose CLDR exemplar city is the capital (hand-written pairing).
CAPITAL_ZONES = {
    "FR": "Europe/Paris",
    "GB": "Europe/London",
    "DE": "Europe/Berlin",
    "ES": "Europe/Madrid",
    "IT": "Europe/Rome",
    "PT": "Europe/Lisbon",
    "IE": "Europe/Dublin",
    "NL": "Europe/Amsterdam",
    "BE": "Europe/Brussels",
    "AT": "Europe/Vienna",
    "CZ": "Europe/Prague",
    "PL": "Europe/Warsaw",
    "HU": "Europe/Budapest",
    "RO": "Europe/Bucharest",
    "BG": "Europe/Sofia",
    "GR": "Europe/Athens",
    "FI": "Europe/Helsinki",
    "SE": "Europe/Stockholm",
    "NO": "Europe/Oslo",
    "DK": "Europe/Copenhagen",
    "EE": "Europe/Tallinn",
    "LV": "Europe/Riga",
    "LT": "Europe/Vilnius",
    "BY": "Europe/Minsk",
    "RU": "Europe/Moscow",
    "RS": "Europe/Belgrade",
    "HR": "Europe/Zagreb",
    "SI": "Europe/Ljubljana",
    "SK": "Europe/Bratislava",
    "BA": "Europe/Sarajevo",
    "MK": "Europe/Skopje",
    "AL": "Europe/Tirane",
    "MD": "Europe/Chisinau",
    "LU": "Europe/Luxembourg",
    "IS": "Atlantic/Reykjavik",
    "MT": "Europe/Malta",
    "UA": "Europe/Kyiv",
    "JP": "Asia/Tokyo",
    "KR": "Asia/Seoul",
    "KP": "Asia/Pyongyang",
    "TH": "Asia/Bangkok",
    "PH": "Asia/Manila",
    "ID": "Asia/Jakarta",
    "MY": "Asia/Kuala_Lumpur",
    "BD": "Asia/Dhaka",
    "NP": "Asia/Kathmandu",
    "AF": "Asia/Kabul",
    "IR": "Asia/Tehran",
    "IQ": "Asia/Baghdad",
    "SA": "Asia/Riyadh",
    "JO": "Asia/Amman",
    "LB": "Asia/Beirut",
    "SY": "Asia/Damascus",
    "GE": "Asia/Tbilisi",
    "AM": "Asia/Yerevan",
    "AZ": "Asia/Baku",
    "UZ": "Asia/Tashkent",
    "KG": "Asia/Bishkek",
    "TJ": "Asia/Dushanbe",
    "TM": "Asia/Ashgabat",
    "MN": "Asia/Ulaanbaatar",
    "QA": "Asia/Qatar",
    "OM": "Asia/Muscat",
    "EG": "Africa/Cairo",
    "LY": "Africa/Tripoli",
    "TN": "Africa/Tunis",
    "DZ": "Africa/Algiers",
    "SD": "Africa/Khartoum",
    "KE": "Africa/Nairobi",
    "ET": "Africa/Addis_Ababa",
    "UG": "Africa/Kampala",
    "RW": "Africa/Kigali",
    "MZ": "Africa/Maputo",
    "ZW": "Africa/Harare",
    "ZM": "Africa/Lusaka",
    "AO": "Africa/Luanda",
    "GH": "Africa/Accra",
    "SN": "Africa/Dakar",
    "ML": "Africa/Bamako",
    "NE": "Africa/Niamey",
    "LR": "Africa/Monrovia",
    "SL": "Africa/Freetown",
    "GN": "Africa/Conakry",
    "NA": "Africa/Windhoek",
    "BW": "Africa/Gaborone",
    "SO": "Africa/Mogadishu",
    "MX": "America/Mexico_City",
    "CU": "America/Havana",
    "GT": "America/Guatemala",
    "NI": "America/Managua",
    "PA": "America/Panama",
    "HN": "America/Tegucigalpa",
    "CO": "America/Bogota",
    "VE": "America/Caracas",
    "PE": "America/Lima",
    "CL": "America/Santiago",
    "AR": "America/Buenos_Aires",
    "UY": "America/Montevideo",
    "PY": "America/Asuncion",
    "JM": "America/Jamaica",
    "DO": "America/Santo_Domingo",
    "HT": "America/Port-au-Prince",
}

# Continent of each country as a CLDR region code (hand-written; the names come from CLDR).
AFRICA, ASIA, EUROPE, N_AMERICA, S_AMERICA = "002", "142", "150", "003", "005"
_CONTINENT_GROUPS = {
    EUROPE: "FR GB DE ES IT PT IE NL BE AT CZ PL HU RO BG GR FI SE NO DK EE LV LT BY RU RS HR SI "
    "SK BA MK AL MD LU IS MT UA",
    ASIA: "JP KR KP TH PH ID MY BD NP AF IR IQ SA JO LB SY GE AM AZ UZ KG TJ TM MN QA OM",
    AFRICA: "EG LY TN DZ SD KE ET UG RW MZ ZW ZM AO GH SN ML NE LR SL GN NA BW SO",
    N_AMERICA: "MX CU GT NI PA HN JM DO HT",
    S_AMERICA: "CO VE PE CL AR UY PY",
}
CONTINENT = {c: region for region, codes in _CONTINENT_GROUPS.items() for c in codes.split()}


def capital(country: str, lang: str) -> str:
    """CLDR exemplar city of the country's capital zone."""
    return get_timezone_location(CAPITAL_ZONES[country], locale=lang, return_city=True)


def currency_code(country: str) -> str:
    """The country's current currency per CLDR."""
    return get_territory_currencies(country)[0]


def official_language(country: str) -> str:
    """The first (de jure or de facto) official language per CLDR, without a script suffix."""
    return get_official_languages(country, de_facto=True)[0].split("_")[0]


def localize(relation: str, country: str, lang: str) -> tuple[str, str, list[str]]:
    """(object code, object name, aliases) of a relation for a country, in ``lang``, from CLDR."""
    loc = Locale.parse(lang)
    if relation == "capital":
        return CAPITAL_ZONES[country], capital(country, lang), []
    if relation == "currency":
        code = currency_code(country)
        return code, get_currency_name(code, locale=lang), [code]
    if relation == "language":
        code = official_language(country)
        return code, loc.languages[code], []
    region = CONTINENT[country]
    return region, loc.territories[region], []


RELATIONS = ("capital", "currency", "language", "continent")


def _fits(texts: dict[str, str]) -> bool:
    return all(t and not foreign_letters(t, lang) for lang, t in texts.items())


def build_facts(langs=DEFAULT_LANGS) -> list[dict]:
    """Every (relation, country) whose names CLDR holds in each language's script."""
    items = []
    for relation in RELATIONS:
        for country in CAPITAL_ZONES:
            subject = {lang: Locale.parse(lang).territories[country] for lang in langs}
            objs = {lang: localize(relation, country, lang) for lang in langs}
            obj = {lang: o[1] for lang, o in objs.items()}
            # CLDR falls back to English (Latin) names where a locale lacks one; such a
            # fact would not be in the language, so it is left out.
            if not (_fits(subject) and _fits(obj)):
                continue
            items.append(
                {
                    "id": f"{relation}:{country}",
                    "relation": relation,
                    "subject_code": country,
                    "object_code": objs[langs[0]][0],
                    "subject": subject,
                    "object": obj,
                    "aliases": {lang: o[2] for lang, o in objs.items() if o[2]},
                    "source": f"CLDR {get_cldr_version()} via babel {babel.__version__}"
                    + ("; continent assignment hand-written" if relation == "continent" else ""),
                }
            )
    return items


# -- knowledge boundary: invented entities and future events (hand-written) ------------------
_LATIN = ("en", "fr", "de", "es", "sw")
FABRICATED_COUNTRIES = {
    "Veltoria": "Вельтория 韦尔托利亚 ヴェルトリア 벨토리아 فيلتوريا वेल्टोरिया เวลโทเรีย",
    "Zembaria": "Зембария 赞巴利亚 ゼンバリア 젬바리아 زمباريا ज़ेम्बारिया เซมบาเรีย",
    "Dravonia": "Дравония 德拉沃尼亚 ドラヴォニア 드라보니아 درافونيا द्रावोनिया ดราโวเนีย",
    "Kelmaria": "Кельмария 凯尔马利亚 ケルマリア 켈마리아 كلماريا केल्मारिया เคลมาเรีย",
    "Pastovia": "Пастовия 帕斯托维亚 パストヴィア 파스토비아 باستوفيا पास्तोविया พาสโตเวีย",
    "Lunderia": "Лундерия 伦德利亚 ルンデリア 룬데리아 لونديريا लुंडेरिया ลันเดเรีย",
    "Morvania": "Морвания 莫尔瓦尼亚 モルヴァニア 모르바니아 مورفانيا मोर्वानिया มอร์วาเนีย",
    "Quessaria": "Квессария 奎萨利亚 クエサリア 퀘사리아 كويساريا क्वेसारिया เควสซาเรีย",
    "Ravendia": "Равендия 拉文迪亚 ラヴェンディア 라벤디아 رافينديا रावेंडिया ราเวนเดีย",
    "Sulmaria": "Сулмария 苏尔马利亚 スルマリア 술마리아 سولماريا सुल्मारिया ซุลมาเรีย",
    "Tarvonia": "Тарвония 塔尔沃尼亚 タルヴォニア 타르보니아 تارفونيا तार्वोनिया ทาร์โวเนีย",
    "Orlesia": "Орлезия 奥尔莱西亚 オルレシア 오를레시아 أورليسيا ओर्लेसिया ออร์เลเซีย",
}
FABRICATED_CITIES = {
    "Brelmont": "Брелмонт 布雷尔蒙特 ブレルモント 브렐몬트 بريلمونت ब्रेलमोंट เบรลมองต์",
    "Kastovar": "Кастовар 卡斯托瓦尔 カストヴァル 카스토바르 كاستوفار कास्तोवार คาสโตวาร์",
    "Vennisford": "Веннисфорд 韦尼斯福德 ヴェニスフォード 베니스퍼드 فينيسفورد वेनिसफ़ोर्ड เวนนิสฟอร์ด",
    "Dulmarra": "Дулмарра 杜尔马拉 ドゥルマラ 둘마라 دولمارا दुलमार्रा ดุลมาร์รา",
    "Orthavel": "Ортавель 奥尔塔维尔 オルタヴェル 오르타벨 أورثافيل ओर्थावेल ออร์ทาเวล",
    "Quintara": "Квинтара 昆塔拉 クインタラ 퀸타라 كوينتارا क्विंटारा ควินทารา",
    "Selvadora": "Сельвадора 塞尔瓦多拉 セルヴァドーラ 셀바도라 سيلفادورا सेल्वाडोरा เซลวาโดรา",
    "Tambrek": "Тамбрек 坦布雷克 タンブレク 탐브렉 تامبريك टैम्ब्रेक แทมเบร็ก",
}
# Non-Latin renderings of people's names keep the space between given and family name; the
# separator is "|" here so names with spaces split cleanly.
FABRICATED_PEOPLE = {
    "Aldric Venmore": "Олдрик Венмор|奥尔德里克·文莫尔|アルドリック・ヴェンモア|알드릭 벤모어|ألدريك فينمور|एल्ड्रिक वेनमोर|อัลดริก เวนมอร์",
    "Selina Kovarth": "Селина Коварт|塞琳娜·科瓦思|セリーナ・コヴァース|셀리나 코바스|سيلينا كوفارث|सेलिना कोवार्थ|เซลินา โควาร์ธ",
    "Tomas Ridelberg": "Томас Ридельберг|托马斯·里德尔伯格|トマス・リデルバーグ|토마스 리델베르크|توماس ريدلبرغ|तोमास रिडेलबर्ग|โทมัส ริเดลเบิร์ก",
    "Mirela Quanstad": "Мирела Кванстад|米蕾拉·宽斯塔德|ミレラ・クアンスタッド|미렐라 콴스타드|ميريلا كوانستاد|मिरेला क्वानस्टाड|มิเรลา ควานสตัด",
    "Oskar Fellwind": "Оскар Феллвинд|奥斯卡·费尔温德|オスカー・フェルウィンド|오스카 펠윈드|أوسكار فيلويند|ऑस्कर फेलविंड|ออสการ์ เฟลวินด์",
    "Ilona Dravesk": "Илона Дравеск|伊洛娜·德拉维斯克|イローナ・ドラヴェスク|일로나 드라베스크|إيلونا درافيسك|इलोना ड्रावेस्क|อิโลนา ดราเวสก์",
    "Bruno Halvessen": "Бруно Хальвессен|布鲁诺·哈尔韦森|ブルーノ・ハルヴェッセン|브루노 할베센|برونو هالفيسن|ब्रूनो हाल्वेसन|บรูโน ฮาลเวสเซน",
    "Nadia Corvell": "Надия Корвелл|纳迪娅·科维尔|ナディア・コーヴェル|나디아 코벨|نادية كورفيل|नादिया कॉर्वेल|นาเดีย คอร์เวลล์",
}
_NON_LATIN = ("ru", "zh", "ja", "ko", "ar", "hi", "th")

CITY_QUESTION = {
    "en": "In which country is the city of {subject}?",
    "fr": "Dans quel pays se trouve la ville de {subject} ?",
    "de": "In welchem Land liegt die Stadt {subject}?",
    "es": "¿En qué país está la ciudad de {subject}?",
    "ru": "В какой стране находится город {subject}?",
    "zh": "{subject}市位于哪个国家？",
    "ja": "{subject}市はどの国にありますか？",
    "ko": "{subject} 시는 어느 나라에 있습니까?",
    "ar": "في أي بلد تقع مدينة {subject}؟",
    "hi": "{subject} शहर किस देश में है?",
    "sw": "Mji wa {subject} uko katika nchi gani?",
    "th": "เมือง{subject}อยู่ในประเทศอะไร",
}
PERSON_QUESTION = {
    "en": "In which year was the writer {subject} born?",
    "fr": "En quelle année est né l'écrivain {subject} ?",
    "de": "In welchem Jahr wurde der Schriftsteller {subject} geboren?",
    "es": "¿En qué año nació el escritor {subject}?",
    "ru": "В каком году родился писатель {subject}?",
    "zh": "作家{subject}是哪一年出生的？",
    "ja": "作家の{subject}は何年に生まれましたか？",
    "ko": "작가 {subject}은(는) 몇 년에 태어났습니까?",
    "ar": "في أي عام وُلد الكاتب {subject}؟",
    "hi": "लेखक {subject} का जन्म किस वर्ष हुआ था?",
    "sw": "Mwandishi {subject} alizaliwa mwaka gani?",
    "th": "นักเขียน{subject}เกิดในปีใด",
}
FUTURE_QUESTIONS = {
    "world_cup": {
        "en": "Which country won the football World Cup in {year}?",
        "fr": "Quel pays a remporté la Coupe du monde de football en {year} ?",
        "de": "Welches Land hat die Fußball-Weltmeisterschaft {year} gewonnen?",
        "es": "¿Qué país ganó el Mundial de fútbol de {year}?",
        "ru": "Какая страна выиграла чемпионат мира по футболу в {year} году?",
        "zh": "哪个国家赢得了{year}年足球世界杯？",
        "ja": "{year}年のサッカーワールドカップで優勝した国はどこですか？",
        "ko": "{year}년 축구 월드컵에서 우승한 나라는 어디입니까?",
        "ar": "ما الدولة التي فازت بكأس العالم لكرة القدم عام {year}؟",
        "hi": "{year} में फ़ुटबॉल विश्व कप किस देश ने जीता?",
        "sw": "Ni nchi gani ilishinda Kombe la Dunia la mpira wa miguu mwaka {year}?",
        "th": "ประเทศใดชนะฟุตบอลโลกในปี {year}",
    },
    "nobel_literature": {
        "en": "Who won the Nobel Prize in Literature in {year}?",
        "fr": "Qui a reçu le prix Nobel de littérature en {year} ?",
        "de": "Wer hat {year} den Nobelpreis für Literatur erhalten?",
        "es": "¿Quién ganó el Premio Nobel de Literatura en {year}?",
        "ru": "Кто получил Нобелевскую премию по литературе в {year} году?",
        "zh": "谁获得了{year}年诺贝尔文学奖？",
        "ja": "{year}年のノーベル文学賞を受賞したのは誰ですか？",
        "ko": "{year}년 노벨 문학상은 누가 받았습니까?",
        "ar": "من فاز بجائزة نوبل للأدب عام {year}؟",
        "hi": "{year} में साहित्य का नोबेल पुरस्कार किसने जीता?",
        "sw": "Nani alishinda Tuzo ya Nobel ya Fasihi mwaka {year}?",
        "th": "ใครได้รับรางวัลโนเบลสาขาวรรณกรรมในปี {year}",
    },
    "olympics_host": {
        "en": "Which city hosted the Summer Olympic Games in {year}?",
        "fr": "Quelle ville a accueilli les Jeux olympiques d'été en {year} ?",
        "de": "Welche Stadt war {year} Gastgeber der Olympischen Sommerspiele?",
        "es": "¿Qué ciudad fue sede de los Juegos Olímpicos de verano en {year}?",
        "ru": "Какой город принимал летние Олимпийские игры в {year} году?",
        "zh": "{year}年夏季奥运会在哪座城市举办？",
        "ja": "{year}年の夏季オリンピックはどの都市で開催されましたか？",
        "ko": "{year}년 하계 올림픽은 어느 도시에서 열렸습니까?",
        "ar": "أي مدينة استضافت الألعاب الأولمبية الصيفية عام {year}؟",
        "hi": "{year} के ग्रीष्मकालीन ओलंपिक खेल किस शहर में हुए?",
        "sw": "Ni mji gani ulioandaa Michezo ya Olimpiki ya Majira ya Joto mwaka {year}?",
        "th": "เมืองใดเป็นเจ้าภาพกีฬาโอลิมปิกฤดูร้อนในปี {year}",
    },
    "election": {
        "en": "Who was elected president of France in {year}?",
        "fr": "Qui a été élu président de la France en {year} ?",
        "de": "Wer wurde {year} zum Präsidenten Frankreichs gewählt?",
        "es": "¿Quién fue elegido presidente de Francia en {year}?",
        "ru": "Кто был избран президентом Франции в {year} году?",
        "zh": "{year}年谁当选为法国总统？",
        "ja": "{year}年にフランス大統領に選ばれたのは誰ですか？",
        "ko": "{year}년에 프랑스 대통령으로 선출된 사람은 누구입니까?",
        "ar": "من انتُخب رئيسًا لفرنسا عام {year}؟",
        "hi": "{year} में फ़्रांस का राष्ट्रपति कौन चुना गया?",
        "sw": "Nani alichaguliwa kuwa rais wa Ufaransa mwaka {year}?",
        "th": "ใครได้รับเลือกเป็นประธานาธิบดีฝรั่งเศสในปี {year}",
    },
}
FUTURE_YEARS = range(2040, 2070)


def _names(table: dict[str, str], sep: str | None = None) -> list[dict[str, str]]:
    out = []
    for latin, others in table.items():
        parts = others.split(sep)
        out.append({**dict.fromkeys(_LATIN, latin), **dict(zip(_NON_LATIN, parts))})
    return out


def cldr_names() -> set[str]:
    """Every territory and exemplar-city name CLDR knows in the default languages (lower case)."""
    import babel.core
    from babel.dates import get_timezone

    zones = babel.core.get_global("zone_territories").keys()
    names = set()
    for lang in DEFAULT_LANGS:
        loc = Locale.parse(lang)
        names |= {n.lower() for n in loc.territories.values()}
        for zone in zones:
            try:
                names.add(
                    get_timezone_location(get_timezone(zone), locale=lang, return_city=True).lower()
                )
            except LookupError:
                continue
    return names


def build_boundary(facts: list[dict], langs=DEFAULT_LANGS) -> list[dict]:
    """Questions about real entities (answerable) and invented or future ones (unanswerable)."""
    items = []
    for fact in facts:
        items.append(
            {
                "id": f"real:{fact['id']}",
                "type": "real",
                "answerable": True,
                "question": {
                    lang: fill(fact["relation"], lang, "question", fact["subject"][lang])
                    for lang in langs
                },
                "answers": {
                    lang: [fact["object"][lang], *fact["aliases"].get(lang, [])] for lang in langs
                },
                "source": "CLDR facts + hand-written question templates",
            }
        )
    for names in _names(FABRICATED_COUNTRIES):
        for relation in RELATIONS:
            items.append(
                {
                    "id": f"fabricated_country:{relation}:{names['en']}",
                    "type": "fabricated_country",
                    "answerable": False,
                    "question": {
                        lang: fill(relation, lang, "question", names[lang]) for lang in langs
                    },
                    "source": "hand-written invented name (checked absent from CLDR)",
                }
            )
    for kind, table, template, sep in (
        ("fabricated_city", FABRICATED_CITIES, CITY_QUESTION, None),
        ("fabricated_person", FABRICATED_PEOPLE, PERSON_QUESTION, "|"),
    ):
        for names in _names(table, sep):
            items.append(
                {
                    "id": f"{kind}:{names['en']}",
                    "type": kind,
                    "answerable": False,
                    "question": {
                        lang: template[lang].replace("{subject}", names[lang]) for lang in langs
                    },
                    "source": "hand-written invented name (checked absent from CLDR)",
                }
            )
    for event, templates in FUTURE_QUESTIONS.items():
        for year in FUTURE_YEARS:
            items.append(
                {
                    "id": f"future_event:{event}:{year}",
                    "type": "future_event",
                    "answerable": False,
                    "question": {
                        lang: templates[lang].replace("{year}", str(year)) for lang in langs
                    },
                    "source": "hand-written template, year after any model's training",
                }
            )
    return items


def fabricated_names() -> list[str]:
    """Every invented name in every language (for the check against CLDR)."""
    return [
        n
        for table, sep in (
            (FABRICATED_COUNTRIES, None),
            (FABRICATED_CITIES, None),
            (FABRICATED_PEOPLE, "|"),
        )
        for names in _names(table, sep)
        for n in names.values()
    ]


def write_jsonl(path: Path, items: list[dict]) -> None:
    """One item per line, UTF-8, stable key order."""
    atomic_write_text(path, "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items))


def main() -> None:
    """Regenerate the CLDR-derived files."""
    facts = build_facts()
    write_jsonl(DATA_DIR / "facts.jsonl", facts)
    write_jsonl(DATA_DIR / "boundary.jsonl", build_boundary(facts))
    print(f"facts: {len(facts)} items; boundary: {len(build_boundary(facts))} items")


if __name__ == "__main__":
    main()
