#!/usr/bin/env python3
"""Makes the tokenizer parity fixtures in tests/fixtures/tokenizer/ with Hugging Face `tokenizers`.

Three small tokenizers are trained on the King James Bible (Debian bible-kjv, read with
`bible(1)`) plus a few lines of other scripts, so that merges exist for them too:

  deepseek_style  byte-level BPE with the DeepSeek-V3 pre-tokenizer: a Sequence of Split
                  regexes (digits in groups of 1-3, a run of CJK / kana, then the GPT-4-like
                  pattern with punctuation and symbol classes), then ByteLevel without its own
                  regex. The three patterns are DeepSeek-V3's published tokenizer.json ones as
                  reproduced by llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM (V4 ships its own
                  tokenizer.json; the engine reads whatever patterns the file holds). Special
                  tokens use DeepSeek's spellings; <think> and </think> are added, non-special
                  tokens; the post-processor prepends BOS.
  gpt2_style      byte-level BPE with ByteLevel(use_regex=True), i.e. the GPT-2 regex, and
                  <|endoftext|> (the kind the bundled model's training script makes).
  byte_fallback   a Llama-2-like BPE over characters with byte_fallback=True (<0xXX> tokens),
                  Prepend/Replace normalizers and the Replace/ByteFallback/Fuse/Strip decoder.

For each: <name>.tokenizer.json and <name>.expected.json with, per corpus text, the ids with
and without add_special_tokens and with special-token parsing on and off, and decode results
for token-id sequences (including sequences that cut UTF-8 characters apart).

Usage: /tmp/venv/bin/python scripts/make_tokenizer_fixtures.py [--out tests/fixtures/tokenizer]
"""
import argparse
import json
import os
import random
import subprocess

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
DEEPSEEK_SPECIALS = [BOS, EOS, "<｜User｜>", "<｜Assistant｜>", "<｜pad｜>"]
DEEPSEEK_ADDED = ["<think>", "</think>"]

# DeepSeek-V3's pre-tokenizer Split patterns (see the module docstring for the source).
DEEPSEEK_PATTERNS = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
]

# Lines in other scripts so the trained merges cover more than English.
EXTRA_LINES = [
    "起初，神创造天地。地是空虚混沌，渊面黑暗；神的灵运行在水面上。",
    "神说：“要有光”，就有了光。神看光是好的，就把光暗分开了。",
    "はじめに神は天と地とを創造された。地は形なく、むなしく、やみが淵のおもてにあり、",
    "カタカナのテキストとひらがなのテキスト。東京都は日本の首都です。",
    "В начале сотворил Бог небо и землю. Земля же была безвидна и пуста.",
    "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν, καὶ θεὸς ἦν ὁ λόγος.",
    "في البدء خلق الله السماوات والأرض. وكانت الأرض خربة وخالية.",
    "태초에 하나님이 천지를 창조하시니라. 땅이 혼돈하고 공허하며",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. Ça va? Déjà vu, naïve café.",
    "def main(argv):\n    return sum(int(x) for x in argv[1:])  # 12345 + 67890\n",
    "if (a <= b && c != d) { x += 0x1F; } // comment\n\tindented\ttabs",
    "Prices: $1,234.56, €99, ¥1000, 3.14159, 2026-11-24 12:30:45 +01:00",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ✨ 🎉",
]

CORPUS = [
    "In the beginning God created the heaven and the earth.",
    "",
    " ",
    "a",
    "Hello, world! I'm here; you're there. We'll see, they've gone, he'd said, IT'S DON'T.",
    "   leading spaces and trailing spaces   ",
    "tabs\tand\t\tnewlines\n\nand\r\nwindows\rline endings\n",
    "    \n\n\n    \t \u00a0nbsp\u00a0\u00a0 ideographic\u3000space next\u0085line\u2028sep\u2029para\u200bzwsp",
    "x.\u0085.\u0085\u0085!\u3000?\u2028,  \u0085 \u0085\t\u00a0.\u1680!\u2007\u200a-",
    "Numbers 1 12 123 1234 12345 1234567890 3.14159 1,000,000 0x1F 1e-9 ٠١٢٣٤ １２３ ²³ ½ Ⅻ",
    "起初，神创造天地。神说：“要有光”，就有了光。",
    "はじめに神は天と地とを創造された。カタカナ、ひらがな。ｶﾀｶﾅ",
    "中文English混合123テキスト!",
    "В начале сотворил Бог небо и землю.",
    "Ἐν ἀρχῇ ἦν ὁ λόγος",
    "في البدء خلق الله السماوات والأرض",
    "태초에 하나님이 천지를 창조하시니라",
    "हिन्दी देवनागरी लिपि में लिखी जाती है। தமிழ் ไทย ภาษา",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Deich. Ça va? e\u0301 (combining) Å",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷🇯🇵 ❤️ ✨ 🎉 🫠",
    "math ∑∫√∞ ≤ ≥ ≠ → ⇒ ∀x∃y arrows ←↑→↓ box ┌─┐ music ♪♫",
    "code: def f(x):\n    return x**2 + 1  # comment\nprint(f(12345))\n",
    "if (a <= b && c != d) { x += 0x1F; } /* c */ \"quoted\" 'single' `back`",
    "URL https://example.com/a/b?c=1&d=2#frag email user@example.org",
    "!!! ??? ... --- ___ *** ### $$$ %%% ^^^ ~~~ ||| \\\\ //",
    ".a .A ,b (c) [d] {e} \"f\" 'g' -h _i",
    "Special text <｜User｜> inside <｜Assistant｜> content <｜begin▁of▁sentence｜> and <think>x</think>",
    "<|endoftext|> in the middle<|endoftext|>and end <|endoftext|>",
    "almost <｜User｜ special and <think and </think",
    "\u00ff\u0100\u0101 control \u0001\u0002\u001f\u007f chars",
    "And God said, Let there be light: and there was light. " * 8,
    "x" * 300,
    "1" * 50,
    " " * 40 + "end",
]

# Raw byte strings (invalid UTF-8): the engine replaces invalid sequences by U+FFFD before
# encoding, as Python's errors="replace" (both use the maximal-subpart rule).
INVALID_BYTES = [
    b"abc\xffdef",
    b"\xe4\xb8",            # cut-off CJK character
    b"\xe4\xb8\xadX\xe6",    # valid then cut
    b"\xc0\xaf overlong",
    b"\xed\xa0\x80 surrogate",
    b"\xf0\x9f\x98 cut emoji \xf0\x9f\x98\x80",
    b"\x80\x80\x80 lone continuations",
    b"\xf4\x90\x80\x80 above U+10FFFF",
]


def kjv_lines():
    text = subprocess.run(["bible", "-f", "-l100000", "Gen1:1-Rev22:21"], check=True,
                          capture_output=True, text=True).stdout
    return [line.split(" ", 1)[1] for line in text.splitlines() if " " in line]


def deepseek_style(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in DEEPSEEK_PATTERNS]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2, show_progress=False,
                                  special_tokens=DEEPSEEK_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_tokens(DEEPSEEK_ADDED)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def gpt2_style(lines):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def byte_fallback(lines):
    # Train a character BPE on English only, then rebuild it with byte tokens and
    # byte_fallback so that every character outside the vocabulary becomes <0xXX> ids.
    base = Tokenizer(models.BPE())
    base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer = trainers.BpeTrainer(vocab_size=800, min_frequency=2, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=80)
    base.train_from_iterator(lines[:3000], trainer=trainer)
    model = json.loads(base.to_str())["model"]
    vocab = dict(model["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = base.normalizer
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    return tok


def expected(tok, rng):
    cases = []
    for text in CORPUS + [b.decode("utf-8", errors="replace") for b in INVALID_BYTES]:
        case = {"text": text}
        for add_special in (False, True):
            for parse_special in (False, True):
                tok.encode_special_tokens = not parse_special
                key = f"ids{'_add' if add_special else ''}{'_parse' if parse_special else ''}"
                case[key] = tok.encode(text, add_special_tokens=add_special).ids
        tok.encode_special_tokens = False
        cases.append(case)
    raw = [{"bytes_hex": b.hex(), "ids": tok.encode(b.decode("utf-8", errors="replace"), add_special_tokens=False).ids}
           for b in INVALID_BYTES]
    # Decode cases: encodings of corpus texts, random id sequences, and sequences made of
    # single-byte tokens that split characters (the decoder must produce U+FFFD as tokenizers does).
    vocab_size = tok.get_vocab_size()
    id_lists = [c["ids_add_parse"] for c in cases]
    id_lists += [[rng.randrange(vocab_size) for _ in range(rng.randrange(1, 40))] for _ in range(60)]
    byte_ids = [tok.token_to_id(t) for t in tok.get_vocab() if len(t) == 1 or t.startswith("<0x")]
    byte_ids = sorted(i for i in byte_ids if i is not None)  # get_vocab() order varies run to run
    id_lists += [[rng.choice(byte_ids) for _ in range(rng.randrange(1, 12))] for _ in range(60)]
    decodes = [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                "text_skip_special": tok.decode(ids, skip_special_tokens=True)} for ids in id_lists]
    return {"encode": cases, "encode_bytes": raw, "decode": decodes}


# Multi-turn conversations in the DeepSeek-V4 format, written out by hand from DeepSeek's
# encoding_dsv4.py (chat mode: "</think>" right after "<｜Assistant｜>"; thinking mode: the
# last turn opens "<think>", earlier turns drop their reasoning). The ids are `tokenizers`'
# encoding of that text with special tokens parsed. tests/tokenizer/chat_format_test.cpp
# builds the same conversations from messages.
CHAT_CASES = {
    "chat_multi_turn":
        f"{BOS}You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜></think>Hi there. How can I help?{EOS}"
        "<｜User｜>What is 12+30? Answer briefly.<｜Assistant｜></think>",
    "thinking_multi_turn":
        f"{BOS}You are a helpful assistant.<｜User｜>Hello!<｜Assistant｜></think>Hi there. How can I help?{EOS}"
        "<｜User｜>What is 12+30? Answer briefly.<｜Assistant｜><think>",
    "thinking_prefilled_answer":
        f"{BOS}<｜User｜>Name a colour.<｜Assistant｜><think>The user wants one colour.</think>Blue{EOS}",
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tokenizer"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    lines = kjv_lines() + EXTRA_LINES * 20
    rng = random.Random(7)
    for name, make in (("deepseek_style", deepseek_style), ("gpt2_style", gpt2_style), ("byte_fallback", byte_fallback)):
        tok = make(lines)
        path = os.path.join(args.out, f"{name}.tokenizer.json")
        tok.save(path)
        result = expected(tok, rng)
        if name == "deepseek_style":
            result["chat"] = {key: {"text": text, "ids": tok.encode(text, add_special_tokens=False).ids}
                              for key, text in CHAT_CASES.items()}
        with open(os.path.join(args.out, f"{name}.expected.json"), "w") as f:
            json.dump(result, f, ensure_ascii=True, indent=None)
            f.write("\n")
        print(f"{name}: vocab {tok.get_vocab_size()}, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
