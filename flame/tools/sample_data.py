"""Write the offline sample corpus and its BPE tokenizer (no third-party text, no network).

The corpus is generated from a small seeded grammar: lessons about objects and where they are,
counting, arithmetic, little word problems, comparisons, ordered sequences (days, months,
letters) and fixed facts. It is learnable (arithmetic and counting are consistent, facts never
change) and deterministic for a given seed.

Output layout (``--out DIR``)::

    DIR/data/train-0000i-of-0000n.jsonl     {"text": ...} per line, --num-shards files
    DIR/data/validation-00000-of-00001.jsonl
    DIR/data_parquet/...                    the same files as parquet (--parquet)
    DIR/tokenizer/                          PreTrainedTokenizerFast (byte-level BPE, <s> </s> <pad>)
    DIR/meta.json                           the arguments and document/character counts

``DIR/data`` loads with ``load_dataset(DIR/data, split="train")`` (splits from the file names),
and the tokenizer with ``AutoTokenizer.from_pretrained(DIR/tokenizer)``.

Usage::

    python -m flame.tools.sample_data --out data/sample --num-docs 20000 --vocab-size 2048 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}

NAMES = ["Ann", "Tom", "Mia", "Leo", "Eva", "Sam", "Ida", "Max", "Zoe", "Ben", "Lia", "Noah"]
PRONOUN = {n: ("she" if n in {"Ann", "Mia", "Eva", "Ida", "Zoe", "Lia"} else "he") for n in NAMES}
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "gray"]
OBJECTS = ["ball", "cup", "book", "box", "hat", "key", "lamp", "chair", "spoon", "shoe", "pen", "bag"]
PLACES = ["table", "bed", "door", "window", "shelf", "desk", "sofa", "bench", "fence", "tree"]
RELATIONS = ["on", "under", "next to", "behind", "in front of", "near"]
FRUITS = ["apple", "pear", "plum", "orange", "lemon", "peach", "banana", "cherry"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"]
NUMBER_WORDS += ["twelve"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
MONTHS += ["November", "December"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
LEGS = {"dog": 4, "cat": 4, "horse": 4, "bird": 2, "duck": 2, "spider": 8, "ant": 6, "bee": 6, "fish": 0}
FACT_COLORS = {"grass": "green", "snow": "white", "the sky": "blue", "coal": "black", "a lemon": "yellow"}


def _plural(word: str, n: int) -> str:
    if n == 1:
        return word
    return word + ("es" if word.endswith(("ch", "sh", "x", "s")) else "s")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _objects(r: random.Random) -> str:
    color, obj, rel, place = r.choice(COLORS), r.choice(OBJECTS), r.choice(RELATIONS), r.choice(PLACES)
    name = r.choice(NAMES)
    return r.choice(
        [
            f"The {color} {obj} is {rel} the {place}.",
            f"{name} puts the {color} {obj} {rel} the {place}. Now the {color} {obj} is {rel} the {place}.",
            f"Where is the {color} {obj}? The {color} {obj} is {rel} the {place}.",
            f"{name} has {_a(color)} {obj}. The {obj} of {name} is {color}.",
        ]
    )


def _counting(r: random.Random) -> str:
    a = r.randint(0, 90)
    b = a + r.randint(2, 9)
    if r.random() < 0.5:
        return f"Count from {a} to {b}: " + " ".join(str(i) for i in range(a, b + 1)) + "."
    return f"Count down from {b} to {a}: " + " ".join(str(i) for i in range(b, a - 1, -1)) + "."


def _arithmetic(r: random.Random) -> str:
    a, b = r.randint(0, 50), r.randint(0, 50)
    kind = r.randrange(3)
    if kind == 0:
        return f"{a} plus {b} equals {a + b}."
    if kind == 1:
        a, b = max(a, b), min(a, b)
        return f"{a} minus {b} equals {a - b}."
    a, b = a % 13, b % 13
    return f"{a} times {b} equals {a * b}."


def _word_problem(r: random.Random) -> str:
    name, fruit = r.choice(NAMES), r.choice(FRUITS)
    a, b = r.randint(1, 12), r.randint(1, 12)
    he = PRONOUN[name]
    if r.random() < 0.5:
        return (
            f"{name} has {a} {_plural(fruit, a)}. {he.capitalize()} gets {b} more. "
            f"Now {name} has {a + b} {_plural(fruit, a + b)}."
        )
    a, b = max(a, b), min(a, b)
    friend = r.choice([n for n in NAMES if n != name])
    return (
        f"{name} has {a} {_plural(fruit, a)}. {he.capitalize()} gives {b} to {friend}. "
        f"Now {name} has {a - b} {_plural(fruit, a - b)}."
    )


def _comparison(r: random.Random) -> str:
    a, b = r.sample(range(100), 2)
    if r.random() < 0.5:
        return f"{a} is {'larger' if a > b else 'smaller'} than {b}."
    lo, hi = (a, b) if a < b else (b, a)
    return f"The larger of {a} and {b} is {hi}. The smaller is {lo}."


def _sequence(r: random.Random) -> str:
    kind = r.randrange(4)
    if kind == 0:
        i = r.randrange(7)
        return f"The day after {DAYS[i]} is {DAYS[(i + 1) % 7]}."
    if kind == 1:
        i = r.randrange(12)
        return f"The month after {MONTHS[i]} is {MONTHS[(i + 1) % 12]}."
    if kind == 2:
        i = r.randrange(25)
        return f"The letter after {LETTERS[i]} is {LETTERS[i + 1]}."
    n = r.randint(0, 12)
    return f"The number {NUMBER_WORDS[n]} is written {n}."


def _fact(r: random.Random) -> str:
    if r.random() < 0.6:
        animal = r.choice(list(LEGS))
        n = LEGS[animal]
        return f"A {animal} has {NUMBER_WORDS[n] if n else 'no'} {'leg' if n == 1 else 'legs'}."
    thing = r.choice(list(FACT_COLORS))
    return f"{thing[0].upper() + thing[1:]} is {FACT_COLORS[thing]}."


TOPICS: dict[str, Callable[[random.Random], str]] = {
    "objects": _objects,
    "counting": _counting,
    "arithmetic": _arithmetic,
    "stories": _word_problem,
    "comparisons": _comparison,
    "sequences": _sequence,
    "facts": _fact,
}


def make_document(index: int, r: random.Random) -> str:
    """One lesson: a numbered title and 3-14 sentences, mostly (70%) from the lesson's topic."""
    topic = r.choice(list(TOPICS))
    sentences = [f"Lesson {index} is about {topic}."]
    for _ in range(r.randint(3, 14)):
        gen = TOPICS[topic] if r.random() < 0.7 else r.choice(list(TOPICS.values()))
        sentences.append(gen(r))
    return " ".join(sentences)


def generate_documents(num_docs: int, seed: int, start: int = 0) -> Iterator[str]:
    """``num_docs`` lesson texts, numbered from ``start``; a given (seed, start) gives the same texts."""
    r = random.Random(f"flame-sample-{seed}-{start}")
    for i in range(start, start + num_docs):
        yield make_document(i, r)


def write_jsonl(path: Path, texts: list[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")


def write_parquet(path: Path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts}), path, row_group_size=1000)


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path):
    """Train a byte-level BPE on ``texts`` and save it as a transformers tokenizer folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.save_pretrained(str(out_dir))
    return fast


def make_sample_data(
    out: str | Path,
    num_docs: int = 20000,
    vocab_size: int = 2048,
    seed: int = 0,
    num_shards: int = 4,
    valid_docs: int = 500,
    parquet: bool = False,
) -> dict:
    """Write the corpus (train shards + validation) and the tokenizer under ``out``; returns the metadata."""
    if num_docs < num_shards or num_shards < 1:
        raise ValueError(f"--num-docs ({num_docs}) must be >= --num-shards ({num_shards}) >= 1")
    if not 260 < vocab_size <= 65536:
        raise ValueError(f"--vocab-size {vocab_size} must be in (260, 65536] (byte alphabet + specials)")
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    if parquet:
        (out / "data_parquet").mkdir(exist_ok=True)
    train = list(generate_documents(num_docs, seed))
    valid = list(generate_documents(valid_docs, seed, start=num_docs))
    files = [(f"train-{i:05d}-of-{num_shards:05d}", train[i::num_shards]) for i in range(num_shards)]
    if valid_docs:
        files.append(("validation-00000-of-00001", valid))
    for stem, texts in files:
        write_jsonl(out / "data" / f"{stem}.jsonl", texts)
        if parquet:
            write_parquet(out / "data_parquet" / f"{stem}.parquet", texts)
    train_tokenizer(train, vocab_size, out / "tokenizer")
    meta = {
        "seed": seed,
        "num_docs": num_docs,
        "valid_docs": valid_docs,
        "num_shards": num_shards,
        "vocab_size": vocab_size,
        "train_chars": sum(len(t) for t in train),
        "generator": "flame.tools.sample_data",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (data/, tokenizer/, meta.json)")
    p.add_argument("--num-docs", type=int, default=20000, help="training documents (default 20000)")
    p.add_argument("--valid-docs", type=int, default=500, help="validation documents (default 500; 0 = none)")
    p.add_argument("--num-shards", type=int, default=4, help="training jsonl files (default 4)")
    p.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size incl. specials (default 2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parquet", action="store_true", help="also write the corpus as parquet under data_parquet/")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        meta = make_sample_data(
            args.out, args.num_docs, args.vocab_size, args.seed, args.num_shards, args.valid_docs, args.parquet
        )
    except ValueError as e:
        print(f"flame.tools.sample_data: error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {meta['num_docs']} documents ({meta['train_chars'] / 1e6:.1f}M chars) in {meta['num_shards']} "
        f"shards and a {meta['vocab_size']}-token BPE tokenizer to {args.out} in {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
