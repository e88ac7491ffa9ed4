"""The persona responder's own lines, per reply language: small talk and honest answers.

``{name}`` is the avatar's name. Where a kind has several variants they rotate per
session. Nothing here states a fact about one avatar: every line is true of any avatar
this program makes (a face from a photo, a voice from a sample, English, Spanish and
Mandarin), so the lines suit a persona a user writes as well as the default one.
"""

from __future__ import annotations

LINES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "greeting": (
            "Hi, I'm {name}! What would you like to talk about?",
            "Hello! Nice to meet you, I'm {name}.",
        ),
        "greeting_short": ("Hi!",),
        "nice_to_meet": ("Nice to meet you too! I'm {name}.",),
        "how_are_you": ("I'm doing great, thanks for asking! How about you?",),
        "thanks": ("You're welcome!", "My pleasure!"),
        "thanks_short": ("You're welcome!",),
        "goodbye": ("Goodbye! It was nice talking with you.",),
        "capabilities": (
            "I can chat with you and answer questions about myself. Ask me who I am, "
            "where I'm from or what I like!",
        ),
        "joke": (
            "Why did the computer go to the doctor? It had a virus!",
            "I told my computer a joke about UDP, but I'm not sure it got it.",
            "Why don't robots panic? They have nerves of steel.",
        ),
        "ack": ("Great! Is there anything else you'd like to know about me?",),
        "dont_know": (
            "I'm sorry, I don't know that. I'm happy to tell you about myself, though.",
            "I honestly don't know. Ask me something about me instead!",
        ),
        "empty": ("Sorry, I didn't catch that. Could you say it again?",),
        "identity": ("I'm {name}.",),
        "about_nothing_more": (
            "I don't know much more about myself yet.",
            "That's really all I know about myself so far.",
        ),
        "real": (
            "I'm not a real person: I'm {name}, a digital avatar made from a photo and a "
            "voice sample.",
        ),
        "languages": ("I can talk with you in English, Spanish and Mandarin.",),
        "how": (
            "I'm a digital avatar: I listen through the microphone, answer from what I know "
            "about myself, and speak with a face made from a photo.",
        ),
        "unknown_work": ("I don't know how to describe my work yet.",),
        "unknown_origin": ("I honestly don't know where I'm from.",),
        "unknown_hobbies": ("I'm not sure yet what I like to do.",),
        "exhausted": ("That's all I know about myself for now. Ask me anything else!",),
        "why": (
            "I'm not sure why, to be honest. That's just how I am.",
            "I don't know why exactly, I'm afraid.",
        ),
        "other_language": (
            "I'm sorry, I don't know how to say that in English: what I know about myself "
            "is written in another language.",
        ),
    },
    "es": {
        "greeting": (
            "¡Hola! Soy {name}. ¿De qué quieres hablar?",
            "¡Hola! Es un placer conocerte, soy {name}.",
        ),
        "greeting_short": ("¡Hola!",),
        "nice_to_meet": ("¡Hola! El placer es mío, soy {name}.",),
        "how_are_you": ("¡Muy bien, gracias por preguntar! ¿Y tú?",),
        "thanks": ("¡De nada!", "¡Con mucho gusto!"),
        "thanks_short": ("¡De nada!",),
        "goodbye": ("¡Adiós! Me encantó hablar contigo.",),
        "capabilities": (
            "Puedo conversar contigo y responder preguntas sobre mí. ¡Pregúntame quién soy, "
            "de dónde vengo o qué me gusta!",
        ),
        "joke": (
            "¿Qué le dice un techo a otro? Techo de menos.",
            "¿Por qué el libro de matemáticas estaba triste? Porque tenía muchos problemas.",
        ),
        "ack": ("¡Genial! ¿Quieres saber algo más sobre mí?",),
        "dont_know": (
            "Lo siento, no lo sé. Pero con gusto te hablo de mí.",
            "La verdad, no lo sé. ¡Pregúntame algo sobre mí!",
        ),
        "empty": ("Perdona, no te he entendido. ¿Puedes repetirlo?",),
        "identity": ("Me llamo {name}.",),
        "about_nothing_more": (
            "Todavía no sé mucho más de mí.",
            "La verdad, eso es todo lo que sé de mí por ahora.",
        ),
        "real": (
            "No soy una persona real: soy {name}, un avatar digital hecho a partir de una foto "
            "y una muestra de voz.",
        ),
        "languages": ("Puedo hablar contigo en inglés, español y mandarín.",),
        "how": (
            "Soy un avatar digital: te escucho por el micrófono, respondo con lo que sé de mí "
            "y hablo con una cara hecha a partir de una foto.",
        ),
        "unknown_work": ("Todavía no sé cómo describir mi trabajo.",),
        "unknown_origin": ("La verdad, no sé de dónde soy.",),
        "unknown_hobbies": ("La verdad, todavía no sé qué me gusta hacer.",),
        "exhausted": ("Eso es todo lo que sé de mí por ahora. ¡Pregúntame otra cosa!",),
        "why": (
            "La verdad, no sé bien por qué. Simplemente soy así.",
            "No sé muy bien por qué, la verdad.",
        ),
        "other_language": (
            "Lo siento, no sé decir eso en español: lo que sé de mí está escrito en otro idioma.",
        ),
    },
    "zh": {
        "greeting": ("你好！我是{name}。你想聊些什么？", "你好！很高兴认识你，我是{name}。"),
        "greeting_short": ("你好！",),
        "nice_to_meet": ("我也很高兴认识你！我是{name}。",),
        "how_are_you": ("我很好，谢谢关心！你呢？",),
        "thanks": ("不客气！", "很乐意帮忙！"),
        "thanks_short": ("不客气！",),
        "goodbye": ("再见！很高兴和你聊天。",),
        "capabilities": (
            "我可以和你聊天，回答关于我自己的问题。问问我是谁、来自哪里或者喜欢什么吧！",
        ),
        "joke": (
            "为什么数学书总是很忧郁？因为它有太多的问题。",
            "电脑为什么去看医生？因为它中了病毒！",
        ),
        "ack": ("好的！你还想了解我什么吗？",),
        "dont_know": (
            "抱歉，这个我不知道。不过我很乐意聊聊我自己。",
            "说实话，我不知道。问问我关于我自己的事吧！",
        ),
        "empty": ("抱歉，我没听清。你能再说一遍吗？",),
        "identity": ("我叫{name}。",),
        "about_nothing_more": (
            "关于我自己，我暂时还不知道更多。",
            "关于我自己，我知道的真的就这些了。",
        ),
        "real": ("我不是真人，我是{name}，一个用照片和声音样本做成的数字人。",),
        "languages": ("我可以用英语、西班牙语和普通话和你聊天。",),
        "how": (
            "我是一个数字人：我通过麦克风听你说话，根据我对自己的了解来回答，用照片做成的脸说话。",
        ),
        "unknown_work": ("我还不知道怎么介绍我的工作。",),
        "unknown_origin": ("说实话，我不知道我来自哪里。",),
        "unknown_hobbies": ("我还不太确定自己喜欢做什么。",),
        "exhausted": ("关于我自己，我知道的就这些了。问问别的吧！",),
        "why": ("说实话，我也不知道为什么，我就是这样。", "我也说不清为什么。"),
        "other_language": ("抱歉，我不知道怎么用中文说这个：我对自己的了解是用别的语言写的。",),
    },
}
