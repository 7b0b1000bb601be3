def load():
    limits = {"max_words": "ten"}
    return {"max_words": int(limits["max_words"])}
