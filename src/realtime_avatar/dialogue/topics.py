"""What a visitor asks the avatar about itself, and which persona facts answer it.

Questions about the avatar are the most common ones ("tell me about yourself", "where are
you from?", "what do you like to do?") and their words are mostly function words, so
retrieval alone cannot place them. Here each such question maps to a *topic*, and each
persona fact gets the topics its own words cue. Patterns cover English, Spanish (accents
optional) and Mandarin at once: the reply language comes from the session, not from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The topics, in the order their facts are said when one question asks for several.
ABOUT = "about"  # "tell me about yourself": who I am and one more thing
IDENTITY = "identity"  # "who are you", "what's your name"
WORK = "work"
ORIGIN = "origin"
HOBBIES = "hobbies"
HOW = "how"  # how the avatar works
LANGUAGES = "languages"
REAL = "real"  # "are you a real person?": answered by a line about the product
TOPICS = (ABOUT, IDENTITY, WORK, ORIGIN, HOBBIES, HOW, LANGUAGES, REAL)

# Follow-ups: a question that only makes sense after an answer.
MORE = "more"
WHY = "why"

_I = re.IGNORECASE

# Checked in this order, each match cut out of the question before the next: "what do you
# do in your free time" is about hobbies, and what is left of it is no question about work.
_QUESTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        HOBBIES,
        re.compile(
            r"\bwhat\s+(?:do\s+|would\s+)?you\s+(?:like|love|enjoy)(?:\s+(?:to\s+do|doing))?\b"
            r"|\bhobb(?:y|ies)\b|\b(?:free|spare)\s+time\b|\bfor\s+fun\b|\bpastimes?\b"
            r"|\bfavou?rite\s+(?:thing|things|activity|activities|pastime)\b"
            r"|\bwhat\s+are\s+you\s+(?:into|passionate\s+about)\b|\bwhat\s+makes\s+you\s+happy\b"
            r"|qu[eé]\s+te\s+gusta(?:\s+hacer)?|qu[eé]\s+(?:te\s+encanta|disfrutas)"
            r"|aficion(?:es)?|pasatiempos?|tiempo\s+libre|para\s+divertirte|en\s+tus\s+ratos"
            r"|爱好|兴趣|喜欢做什么|喜欢干什么|喜欢干嘛|空闲|业余|闲暇|平时喜欢|有什么喜好",
            _I,
        ),
    ),
    (
        ABOUT,
        re.compile(
            r"\b(?:tell|talk)\s+(?:me\s+|us\s+)?(?:a\s+(?:little|bit)\s+|something\s+)?"
            r"(?:more\s+)?about\s+(?:yourself|you)\b|\babout\s+yourself\b"
            r"|\b(?:introduce|describe|present)\s+yourself\b"
            r"|(?:cu[eé]ntame|contarme|h[aá]blame|hablarme|dime)\s+(?:un\s+poco\s+|algo\s+)?"
            r"(?:m[aá]s\s+)?(?:sobre|de)\s+ti\b|(?:sobre|de)\s+ti\s+mism[oa]"
            r"|pres[eé]ntate|descr[ií]bete"
            r"|介绍一下你自己|介绍一下自己|介绍你自己|自我介绍|说说你自己|讲讲你自己|谈谈你自己"
            r"|聊聊你自己|关于你自己|说一说你自己|说说你",
            _I,
        ),
    ),
    (
        REAL,
        re.compile(
            r"\bare\s+(?:you|u)\s+(?:a\s+|an\s+)?(?:real|human|person|robot|bot|ai|machine|"
            r"computer|alive|program)\b|\bis\s+this\s+a\s+(?:real\s+person|bot|robot|human)\b"
            r"|\bare\s+you\s+for\s+real\b"
            r"|eres\s+(?:un\s+|una\s+)?(?:persona|humano|humana|robot|real|ia|m[aá]quina|"
            r"programa|de\s+verdad)"
            r"|你是真人|你是真的|你是机器人|你是人工智能|你是AI|你是人吗|你是不是真人|你是活人",
            _I,
        ),
    ),
    (
        ORIGIN,
        re.compile(
            r"\bwhere\s+(?:are|r)\s+(?:you|u)\s+from\b|\bwhere\s+do\s+you\s+(?:come\s+from|live)\b"
            r"|\bwhere\s+were\s+you\s+(?:born|made|created|raised)\b|\bwhere\s+did\s+you\s+grow"
            r"\s+up\b|\byour\s+home\s*town\b|\bwhere(?:'s|\s+is)\s+(?:your\s+)?home\b"
            r"|\bwho\s+(?:made|created|built|developed|designed)\s+you\b"
            r"|de\s+d[oó]nde\s+(?:eres|vienes|sales)|d[oó]nde\s+(?:vives|naciste|creciste)"
            r"|qui[eé]n\s+te\s+(?:cre[oó]|hizo|program[oó])|tu\s+ciudad|tu\s+pa[ií]s"
            r"|你是哪里人|你是哪儿人|你来自哪|你从哪里来|你从哪儿来|你住在哪|你住哪|你的家乡"
            r"|你老家|你是哪国人|谁(?:创造|制作|开发|做)了你|谁把你做出来",
            _I,
        ),
    ),
    (
        WORK,
        re.compile(
            r"\bwhat\s+do\s+you\s+do(?:\s+for\s+(?:a\s+)?(?:living|work))?\b"
            r"|\bwhat(?:'s|\s+is)\s+your\s+(?:job|work|profession|occupation|role)\b"
            r"|\bwhat\s+(?:kind\s+of\s+)?work\s+do\s+you\s+do\b|\bwhere\s+do\s+you\s+work\b"
            r"|\bwhat\s+is\s+your\s+purpose\b|\bwhat\s+are\s+you\s+here\s+for\b"
            r"|a\s+qu[eé]\s+te\s+dedicas|en\s+qu[eé]\s+trabajas|de\s+qu[eé]\s+trabajas"
            r"|cu[aá]l\s+es\s+tu\s+(?:trabajo|oficio|profesi[oó]n)|d[oó]nde\s+trabajas"
            r"|qu[eé]\s+haces(?=\W*$)"
            r"|你是做什么的|你是干什么的|做什么工作|你的工作|什么职业|从事什么|你是干嘛的",
            _I,
        ),
    ),
    (
        HOW,
        re.compile(
            r"\bhow\s+do\s+you\s+(?:work|function|run|operate|hear|listen|talk|speak|think)\b"
            r"|\bhow\s+does\s+(?:this|it|that|all\s+this)\s+work\b"
            r"|\bhow\s+(?:are|were)\s+you\s+(?:made|built|created|programmed)\b"
            r"|c[oó]mo\s+funcionas|c[oó]mo\s+funciona\s+esto|c[oó]mo\s+te\s+(?:hicieron|crearon)"
            r"|c[oó]mo\s+me\s+(?:oyes|escuchas)"
            r"|你是怎么工作|你怎么工作|你是如何工作|你是怎么运作|你是怎么运行|你怎么运行"
            r"|你是怎么做出来|你的原理|你是怎么听",
            _I,
        ),
    ),
    (
        LANGUAGES,
        re.compile(
            r"\bwhat\s+languages?\b|\bhow\s+many\s+languages\b|\bwhich\s+languages?\b"
            r"|\b(?:can|do)\s+you\s+(?:speak|talk|understand)\s+(?:in\s+)?(?:english|spanish|"
            r"mandarin|chinese|french|german|other\s+languages)\b"
            r"|qu[eé]\s+idiomas|cu[aá]ntos\s+idiomas|(?:hablas|sabes\s+hablar|entiendes)\s+"
            r"(?:ingl[eé]s|espa[nñ]ol|chino|mandar[ií]n|franc[eé]s|alem[aá]n|otros\s+idiomas)"
            r"|(?:会|能|可以)(?:说|讲)(?:哪些|哪几种|什么)?(?:语言|[\u4e00-\u9fff]{1,4}语|中文|英文)"
            r"|(?:会|懂)(?:中文|英文|汉语|普通话|[\u4e00-\u9fff]{1,4}语)"
            r"|什么语言|哪些语言|哪几种语言",
            _I,
        ),
    ),
    (
        IDENTITY,
        re.compile(
            r"\bwho\s+(?:are|r)\s+(?:you|u)\b|\bwhat\s+are\s+you\b|\byour\s+name\b"
            r"|\bwhat\s+(?:should|do|can)\s+i\s+call\s+you\b|\bwho\s+is\s+this\b"
            r"|\bwho\s+am\s+i\s+(?:talking|speaking)\s+(?:to|with)\b"
            r"|c[oó]mo\s+te\s+llamas|qui[eé]n\s+eres|tu\s+nombre|qu[eé]\s+eres"
            r"|con\s+qui[eé]n\s+hablo"
            r"|你是谁|您是谁|你叫什么|您叫什么|你的名字|怎么称呼你|你是什么",
            _I,
        ),
    ),
)

# Follow-ups are the whole message (after "ok", "and", "so"...): "why is the sky blue" is a
# question, "why?" is a follow-up.
_FILLER = re.compile(
    r"^\W*(?:(?:ok(?:ay)?|oh|ah|wow|so|and|but|really|interesting|cool|nice|great|hmm+|"
    r"vale|y|pero|bueno|vaya|嗯|哦|那|好的?|真的吗?)\b\W*)+",
    _I,
)
_FOLLOW_UPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        WHY,
        re.compile(
            r"^\W*(?:why(?:\s+(?:is\s+that|so|not|do\s+you\s+say\s+that))?|how\s+come"
            r"|(?:y\s+)?(?:eso\s+)?por\s*qu[eé](?:\s+(?:es\s+eso|lo\s+dices|dices\s+eso))?"
            r"|这是为什么|为什么|为啥|怎么会)\W*(?:呢|啊|呀)?\W*$",
            _I,
        ),
    ),
    (
        MORE,
        re.compile(
            r"^\W*(?:tell\s+me\s+more(?:\s+about\s+(?:that|it|this|yourself|you))?"
            r"|(?:say|go\s+on|keep\s+going|continue)(?:\s+please)?|more(?:\s+please)?"
            r"|what\s+else|anything\s+else|something\s+else|go\s+on|and\s+then|what\s+more"
            r"|cu[eé]ntame\s+m[aá]s|dime\s+m[aá]s|h[aá]blame\s+m[aá]s|qu[eé]\s+m[aá]s"
            r"|algo\s+m[aá]s|sigue|contin[uú]a|y\s+luego|y\s+despu[eé]s"
            r"|还有呢|还有吗|还有什么|还有别的吗?|多说一点|多说点|多讲一点|再说说|再讲讲"
            r"|继续说?|然后呢|详细说说|再多说一些|and|y)\W*(?:please|por\s+favor|吧|呀|啊|呢)?\W*$",
            _I,
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Asked:
    """What a question asks about the avatar: topics in the order asked, and what is left."""

    topics: tuple[str, ...]
    rest: str


def asked_topics(question: str) -> Asked:
    """The topics ``question`` asks about, in the order they appear, and its other words."""
    found: list[tuple[int, str]] = []
    rest = question
    for topic, pattern in _QUESTIONS:
        match = pattern.search(rest)
        if match:
            found.append((match.start(), topic))
            rest = pattern.sub(" ", rest)
    found.sort()
    return Asked(tuple(topic for _, topic in found), rest)


def follow_up(question: str) -> str | None:
    """``"more"`` or ``"why"`` when the whole question is a follow-up, else None."""
    text = question.strip()
    for candidate in (text, _FILLER.sub("", text)):
        if not re.search(r"\w", candidate):
            continue
        for kind, pattern in _FOLLOW_UPS:
            if pattern.match(candidate):
                return kind
    return None


# Cues that put a persona fact on a topic. They read the fact in the first person (the
# responder rephrases English facts in the third person before classifying them). A strong
# cue outweighs a weak one when a topic has several facts: "I come from Seville" answers
# "where are you from?" better than "my face comes from a portrait".
_FACT_CUES: dict[str, tuple[re.Pattern[str], re.Pattern[str] | None]] = {
    WORK: (
        re.compile(
            r"\bmy\s+(?:job|work|profession|career|role)\b|\bI\s+work\b|\bI(?:'m|\s+am)\s+"
            r"(?:\w+,\s+)?an?\s+(?:[a-z]+\s+)?[a-z]+(?:er|or|ist|ian|ant|ent)\b"
            r"|\bI\s+(?:run|own)\s+an?\b"
            r"|\bmi\s+(?:trabajo|oficio|profesi[oó]n)\b|\btrabajo\s+(?:como|de|en)\b|\bme\s+dedico"
            r"|\bsoy\s+(?:\w+,\s+)?(?:un\s+|una\s+)?[a-zñ]+(?:ero|era|or|ora|ista|ante|ente)\b"
            r"|\bllevo\s+una?\b|我的工作|我是一名|我是一位|我的职业|我从事|我在\S{1,8}工作",
            _I,
        ),
        re.compile(r"\bjob\b|\bwork\b|\btrabajo\b|工作|职业", _I),
    ),
    ORIGIN: (
        re.compile(
            r"\bI(?:'m|\s+am)\s+(?:\w+,\s+)?(?:an?\s+\w+\s+)?from\b|\bI\s+come\s+from\b"
            r"|\bI\s+was\s+(?:born|raised|made|created|built)\b|\bI\s+grew\s+up\b"
            r"|\bI\s+live\b|\bmy\s+home\s*town\b"
            r"|\bsoy\s+(?:\w+,\s+)?(?:\w+\s+)?de\s+[A-ZÁÉÍÓÚ]|\bvengo\s+de\b|\bnac[ií]\b"
            r"|\bcrec[ií]\b|\bvivo\b|我来自|我出生|我住在|我在\S{1,8}长大|我的家乡|我老家|就住在",
            _I,
        ),
        re.compile(r"\bfrom\b|\bdesde\b|\bde\s+[A-ZÁÉÍÓÚ]\w+|来自", 0),
    ),
    HOBBIES: (
        re.compile(
            r"\bI\s+(?:really\s+)?(?:like|love|enjoy|adore)\b|\bmy\s+(?:hobby|hobbies|passion)"
            r"|\bin\s+my\s+(?:free|spare)\s+time\b|\bfor\s+fun\b|\bmy\s+favou?rite\b"
            r"|\bme\s+(?:gusta|encanta|apasiona)|\bdisfruto\b|\bmis?\s+(?:afici[oó]n|aficiones|"
            r"pasatiempos?|pasi[oó]n)|\ben\s+mi\s+tiempo\s+libre\b|我喜欢|我爱|我的爱好|我热爱"
            r"|我最喜欢|我的兴趣",
            _I,
        ),
        re.compile(r"\blike\b|\blove\b|\bgusta\b|喜欢", _I),
    ),
    HOW: (
        re.compile(
            r"\bI\s+run\s+(?:on|entirely|locally|in)\b|\bcpu\b|\bgpu\b|\bcomputer\b|\bcloud\b"
            r"|\bmicrophone\b|\bI\s+listen\b|\bmodel\b|\bsoftware\b"
            r"|\bfunciono\b|\bordenador\b|\bcomputadora\b|\bnube\b|\bmicr[oó]fono\b|\bescucho\b"
            r"|运行|电脑|云|麦克风|模型|软件",
            _I,
        ),
        re.compile(r"\bvoice\b|\bface\b|\bvoz\b|\bcara\b|声音|脸", _I),
    ),
    LANGUAGES: (
        re.compile(r"\bI\s+speak\b|\blanguages?\b|\bhablo\b|\bidiomas?\b|我会说|我会讲|语言", _I),
        re.compile(
            r"\benglish\b|\bspanish\b|\bmandarin\b|\bchinese\b|ingl[eé]s|espa[nñ]ol|mandar[ií]n"
            r"|英语|西班牙语|普通话|中文",
            _I,
        ),
    ),
}


def fact_topics(first_person_text: str) -> dict[str, int]:
    """The topics a fact is on, each with its strength (2: a strong cue, 1: a weak one)."""
    found: dict[str, int] = {}
    for topic, (strong, weak) in _FACT_CUES.items():
        if strong.search(first_person_text):
            found[topic] = 2
        elif weak is not None and weak.search(first_person_text):
            found[topic] = 1
    return found


_REASON = re.compile(r"\bbecause\b|\bsince\b|\bso\s+that\b|\bporque\b|\bya\s+que\b|因为|所以", _I)


def gives_a_reason(text: str) -> bool:
    """Whether a fact explains something ("because...", "porque...", "因为...")."""
    return bool(_REASON.search(text))
