"""TGIF-QA annotations: the official files as they are, the official tokenizer, vocabularies, val split.

The official files ``{Train,Test,Total}_{count,action,transition,frameqa}_question.csv`` are
tab-separated despite their name, with a header line and CRLF line endings. They are read
unmodified. Two fields in ``Test_transition_question.csv`` are CSV-quoted (a candidate
written ``respond "no"`` in quotes with doubled inner quotes); they are unquoted exactly as the official pandas loader does.
The reader is strict: one record per line, no tab or line break inside a field, integers written with
ASCII digits and range-checked, unique question ids; any violation is an error naming file and line.
:func:`write` writes such files (the synthetic benchmark, test fixtures) in exactly the official format,
and refuses any row the reader would refuse. File names, splits and the dialect are defined here; the
columns of each task belong to the task registry (:mod:`stqa.tasks`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stqa.tasks import COUNT_MAX, TASK_NAMES
from stqa.tasks import get as get_task

TASKS: tuple[str, ...] = TASK_NAMES  # the registry's (stqa.tasks); kept here for the data layer's callers
SPLITS: tuple[str, ...] = ("train", "test", "total")
FRAMEQA_TYPES: tuple[str, ...] = ("object", "number", "color", "location")  # `type` column 0..3
KEY_MAX = 2**63 - 1  # a GIF id; it becomes an int64 tensor value and a feature-file key


class _TgifDialect(csv.Dialect):
    """The official files' CSV dialect: tab-separated, CRLF, ``"`` quoting only where a field needs it.

    The real candidate ``respond "no"`` is written quoted, with its inner quotes doubled.
    """

    delimiter = "\t"
    quotechar = '"'
    doublequote = True
    skipinitialspace = False
    lineterminator = "\r\n"
    quoting = csv.QUOTE_MINIMAL
    strict = True


@dataclass(frozen=True)
class QARecord:
    """One TGIF-QA question.

    ``answer``: 0-based candidate index (action, transition), the raw count (count; 0 is kept, the
    model side maps it to 1), or the answer word (frameqa). ``key`` is the integer GIF id shared by
    all tasks and used as the feature-file key.
    """

    task: str
    qid: str
    key: int
    gif_name: str
    question: str
    answer: int | str
    candidates: tuple[str, ...] = ()
    answer_type: str | None = None

    @property
    def is_multiple_choice(self) -> bool:
        return get_task(self.task).multiple_choice


#: A row to :func:`write`: every column of the task mapped to its value, or the values in column order.
Row = Mapping[str, str | int] | Sequence[str | int]


def columns(task: str) -> tuple[str, ...]:
    """The header of ``task``'s annotation files (owned by the task registry, :mod:`stqa.tasks`)."""
    return get_task(task).columns


def split_prefix(split: str) -> str:
    """How the official file names spell ``split``: ``Train``, ``Test``, ``Total``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split.capitalize()


def annotation_filename(task: str, split: str) -> str:
    """Official file name, e.g. ``Train_count_question.csv``."""
    get_task(task)
    return f"{split_prefix(split)}_{task}_question.csv"


#: The file endings a video named in the annotations may have in a videos folder, looked for in this order.
VIDEO_EXTENSIONS: tuple[str, ...] = (".gif", ".mp4", ".webm", ".avi", ".mkv", ".mov")


def video_file(videos_dir: str | os.PathLike, gif_name: str) -> Path | None:
    """``<videos_dir>/<gif_name><ext>`` for the first of :data:`VIDEO_EXTENSIONS` that exists, else None."""
    for ext in VIDEO_EXTENSIONS:
        path = Path(videos_dir) / f"{gif_name}{ext}"
        if path.is_file():
            return path
    return None


def find_video_file(videos_dir: str | os.PathLike, gif_name: str) -> Path:
    """:func:`video_file`, or FileNotFoundError naming the folder and what was looked for."""
    path = video_file(videos_dir, gif_name)
    if path is None:
        raise FileNotFoundError(f"no video file for {gif_name!r} in {os.fspath(videos_dir)} "
                                f"(looked for {', '.join(gif_name + e for e in VIDEO_EXTENSIONS)})")
    return path


def available_tasks(root: str | os.PathLike, split: str) -> tuple[str, ...]:
    """The tasks whose annotation file for ``split`` exists in ``root``, in the registry's order."""
    return tuple(task for task in TASKS if (Path(root) / annotation_filename(task, split)).is_file())


def load(root: str | os.PathLike, task: str, split: str) -> list[QARecord]:
    """Read ``<root>/<Split>_<task>_question.csv`` into records, in file order.

    Strict: every problem is a ``ValueError("<file>:<line>: ...")`` naming the line the record is on
    (``FileNotFoundError`` for a missing file); nothing is skipped or repaired.
    """
    name = annotation_filename(task, split)
    path = Path(root) / name
    if not path.is_file():
        raise FileNotFoundError(f"TGIF-QA annotation file not found: {path} (expected the official file "
                                f"{name!r} in {Path(root)})")
    expected = columns(task)
    lines = _lines(path, path.read_bytes())
    header_line = next(lines, None)
    if header_line is None:
        raise ValueError(f"{path}:1: empty file, expected the header {' '.join(expected)!r}")
    header = _split(header_line[1], expected, f"{path}:1")
    if tuple(header) != expected:
        raise ValueError(f"{path}:1: wrong header for task {task!r}: got {header!r}, "
                         f"expected {list(expected)!r}")
    records: list[QARecord] = []
    first_line: dict[str, int] = {}  # qid -> line it was first seen on
    for lineno, text in lines:
        where = f"{path}:{lineno}"
        if not text:
            raise ValueError(f"{where}: empty line")
        row = _split(text, expected, where)
        if len(row) != len(expected):
            raise ValueError(f"{where}: expected {len(expected)} tab-separated fields, got {len(row)}")
        record = _parse_row(task, dict(zip(expected, row, strict=True)), where)
        if record.qid in first_line:
            raise ValueError(f"{where}: duplicate question id (vid_id) {record.qid!r}, "
                             f"first on line {first_line[record.qid]}")
        first_line[record.qid] = lineno
        records.append(record)
    return records


def write(root: str | os.PathLike, task: str, split: str, rows: Iterable[Row]) -> Path:
    """Write ``rows`` as the official file ``<root>/<Split>_<task>_question.csv``; returns its path.

    The bytes are the official format's: the header, tab-separated fields, CRLF after every line, and
    CSV quoting only where a field needs it (one holding a ``"``). Integers are written in decimal. Each
    row is first checked with the reader's own rules, with its messages and the line the row would be on,
    so :func:`load` reads the file back as exactly these rows; if any row fails, no file is written.
    """
    path = Path(root) / annotation_filename(task, split)
    expected = columns(task)
    buffer = io.StringIO()
    writer = csv.writer(buffer, dialect=_TgifDialect)
    writer.writerow(expected)
    first_line: dict[str, int] = {}  # qid -> line it is written on
    for lineno, row in enumerate(rows, start=2):
        where = f"{path}:{lineno}"
        fields = _row_fields(row, expected, where)
        qid = _parse_row(task, fields, where).qid
        if qid in first_line:
            raise ValueError(f"{where}: duplicate question id (vid_id) {qid!r}, first on line {first_line[qid]}")
        first_line[qid] = lineno
        writer.writerow([fields[name] for name in expected])
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    return path


def _row_fields(row: Row, expected: tuple[str, ...], where: str) -> dict[str, str]:
    """A row to write as ``{column: text}``, refusing what the reader would refuse in the file."""
    if isinstance(row, Mapping):
        if set(row) != set(expected):
            missing, extra = sorted(set(expected) - set(row)), sorted(set(row) - set(expected))
            raise ValueError(f"{where}: row columns do not match the header {list(expected)!r}: "
                             f"missing {missing!r}, unexpected {extra!r}")
        values = [row[name] for name in expected]
    elif isinstance(row, (list, tuple)):
        if len(row) != len(expected):
            raise ValueError(f"{where}: expected {len(expected)} fields, got {len(row)}")
        values = list(row)
    else:
        raise ValueError(f"{where}: a row is a mapping or a list of values, got {type(row).__name__}")
    fields: dict[str, str] = {}
    for name, value in zip(expected, values, strict=True):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"{where}: field {name!r} must be text or an integer, got {type(value).__name__}")
        text = str(value)
        if "\t" in text or _LINE_BREAKS.search(text):
            raise ValueError(f"{where}: field {name!r} contains a tab or a line break; fields may not: "
                             f"{_shorten(text)}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"{where}: field {name!r} cannot be written as UTF-8 ({err.reason})") from None
        fields[name] = text
    return fields


def _lines(path: Path, data: bytes) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) per line; CRLF or LF ends a line, and a final one is optional.

    Lines are split here, before any CSV unquoting, so a record can never span lines: a quote that
    is not closed on its own line is an error on that line instead of silently swallowing the rows
    up to the next quote.
    """
    raw_lines = data.split(b"\n")
    if raw_lines[-1] == b"":  # the file ends with a line break (or is empty)
        raw_lines.pop()
    for lineno, raw in enumerate(raw_lines, start=1):
        raw = raw.removesuffix(b"\r")
        try:
            yield lineno, raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not valid UTF-8: byte 0x{raw[err.start]:02x} at byte "
                             f"{err.start + 1} of the line ({err.reason})") from None


# A record is one line and a field one cell. Line breaks are str.splitlines' set (a lone CR, form feed,
# U+2028, ...): a later reader that splits on any of them would cut the record there.
_LINE_BREAKS = re.compile("[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _split(text: str, expected: tuple[str, ...], where: str) -> list[str]:
    """One line's tab-separated fields, with CSV quoting undone as pandas (the official loader) does.

    ``csv`` in strict mode: a field that starts with ``"`` must end with ``"`` on the same line, with
    inner quotes doubled (the real ``respond "no"`` is written with its quotes doubled inside quotes); a
    quote anywhere else in a field is plain text. No field may contain a tab or a line break.
    """
    if (brk := _LINE_BREAKS.search(text)) is not None:
        column = _column_name(expected, text.count("\t", 0, brk.start()))
        raise ValueError(f"{where}: field {column} contains a line break (U+{ord(brk.group()):04X}) "
                         f"at character {brk.start() + 1} of the line; fields may not contain line breaks")
    try:
        row = next(csv.reader([text], dialect=_TgifDialect))
    except csv.Error as err:
        raise ValueError(f'{where}: bad quoting ({err}): a field that starts with " must end with " on the '
                         'same line, inner quotes doubled (""); a record cannot span lines') from None
    for i, value in enumerate(row):
        if "\t" in value:  # only possible inside quotes, which would hide the tab from the field count
            raise ValueError(f"{where}: field {_column_name(expected, i)} contains a tab (inside quotes); "
                             f"fields may not contain tabs: {_shorten(value)}")
    return row


def _column_name(expected: tuple[str, ...], index: int) -> str:
    """``'question'`` for a column of the header, else its 1-based position."""
    return repr(expected[index]) if index < len(expected) else str(index + 1)


def _parse_row(task: str, f: dict[str, str], where: str) -> QARecord:
    key = _int_field(f, "key", where, KEY_MAX)
    for name in ("gif_name", "question", "vid_id"):
        if not f[name].strip():
            raise ValueError(f"{where}: empty {name!r}")
    spec = get_task(task)
    if spec.multiple_choice:
        answer: int | str = _int_field(f, "answer", where, spec.num_candidates - 1, "answer index")
        candidates = tuple(f[f"a{i}"] for i in range(1, spec.num_candidates + 1))
        return QARecord(task, f["vid_id"], key, f["gif_name"], f["question"], answer, candidates)
    if spec.target == "count":
        answer = _int_field(f, "answer", where, COUNT_MAX, "count answer")  # 0..COUNT_MAX: the format's range
        return QARecord(task, f["vid_id"], key, f["gif_name"], f["question"], answer)
    type_index = _int_field(f, "type", where, len(FRAMEQA_TYPES) - 1, "FrameQA type")
    if not f["answer"].strip():
        raise ValueError(f"{where}: empty FrameQA answer")
    return QARecord(task, f["vid_id"], key, f["gif_name"], f["question"], f["answer"],
                    answer_type=FRAMEQA_TYPES[type_index])


def _int_field(f: dict[str, str], name: str, where: str, maximum: int, what: str | None = None) -> int:
    """A non-negative integer in 0..maximum written with ASCII digits only.

    ``int()`` alone is too lenient for a data file: it accepts ``1_0``, ``+3``, `` 3`` and non-ASCII
    digits such as ``３``, none of which the official files contain.
    """
    text = f[name]
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{where}: field {name!r} must be an integer written with the digits 0-9 only, "
                         f"got {_shorten(text)}")
    # compare lengths first so a huge digit string never reaches int() (which caps at 4300 digits)
    if len(text.lstrip("0")) > len(str(maximum)) or int(text) > maximum:
        shown = text if len(text) <= 30 else f"{text[:30]}... ({len(text)} digits)"
        raise ValueError(f"{where}: {what or f'field {name!r}'} {shown} out of range 0..{maximum}")
    return int(text)


def _shorten(text: str, limit: int = 60) -> str:
    """``repr`` of a field for an error message, cut so a huge field cannot flood the terminal."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


# --- text ------------------------------------------------------------------------------------------


def clip_text(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for echoing user input in error messages
    (a gRPC reply's status message must stay far below its 8 KB metadata limit)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# The official tokenizer (Kim's clean_str as modified in tgif-qa data_util.py), rule for rule. Quirks
# kept on purpose so vocabularies match: "_" survives, and the replacement strings " \( ", " \) ",
# " \? " keep their backslash, so the question mark token is the two characters "\?".
_CLEAN_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"[^A-Za-z0-9(),!?\'\`(_____)]", " "),
        (r"\'s", " 's"),
        (r"\'ve", " 've"),
        (r"n\'t", " n't"),
        (r"\'re", " 're"),
        (r"\'d", " 'd"),
        (r"\'ll", " 'll"),
        (r",", " , "),
        (r"!", " ! "),
        (r"\(", r" \( "),
        (r"\)", r" \) "),
        (r"\?", r" \? "),
        (r"\s{2,}", " "),
    )
)


def clean_str(text: str) -> str:
    """The official ``clean_str`` (lower-cased)."""
    for pattern, repl in _CLEAN_RULES:
        text = pattern.sub(repl, text)
    return text.strip().lower()


def tokenize(text: str) -> list[str]:
    """Tokens as the official loader produces them: ``clean_str(text).split()``."""
    return clean_str(text).split()


def mc_texts(record: QARecord) -> list[str]:
    """The five ``question + ' ' + candidate`` strings of a multiple-choice record (official encoding)."""
    if not record.is_multiple_choice:
        raise ValueError(f"mc_texts needs an action/transition record, got task {record.task!r} ({record.qid})")
    return [f"{record.question} {candidate}" for candidate in record.candidates]


class Vocab:
    """String <-> index map with ``<pad>`` = 0 and ``<unk>`` = 1 (words, or FrameQA answers)."""

    PAD = "<pad>"
    UNK = "<unk>"
    PAD_INDEX = 0
    UNK_INDEX = 1

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if itos[:2] != [self.PAD, self.UNK]:
            raise ValueError(f"a Vocab must start with {self.PAD!r}, {self.UNK!r}; got {itos[:2]!r}")
        stoi = {s: i for i, s in enumerate(itos)}
        if len(stoi) != len(itos):
            dup = [s for s, c in Counter(itos).items() if c > 1]
            raise ValueError(f"duplicate entries in vocabulary: {dup[:5]!r}")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi

    @classmethod
    def build(cls, items: Iterable[Sequence[str] | str], min_count: int = 1,
              specials: Sequence[str] = ()) -> Vocab:
        """From token lists (words) or plain strings (answers, one entry each).

        Entries seen at least ``min_count`` times are kept, most frequent first, ties in
        alphabetical order (deterministic). ``specials`` are reserved right after ``<pad>``/``<unk>``.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: Counter[str] = Counter()
        for item in items:
            if isinstance(item, str):
                counts[item] += 1
            else:
                counts.update(item)
        reserved = [cls.PAD, cls.UNK, *specials]
        words = sorted((w for w, c in counts.items() if c >= min_count and w not in reserved),
                       key=lambda w: (-counts[w], w))
        return cls(reserved + words)

    def encode(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Index of one string (e.g. an answer), or indices of a token list; unknown -> ``<unk>`` (1)."""
        if isinstance(tokens, str):
            return self.stoi.get(tokens, self.UNK_INDEX)
        return [self.stoi.get(t, self.UNK_INDEX) for t in tokens]

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.itos[i] for i in indices]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab({len(self)} entries)"

    def to_dict(self) -> dict:
        """JSON-able form (stored in checkpoints)."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        if not isinstance(data, dict) or not isinstance(data.get("itos"), list):
            raise ValueError("a serialised Vocab must be a dict with an 'itos' list")
        return cls(data["itos"])


def record_texts(record: QARecord) -> list[str]:
    """The strings the official code builds the word vocabulary from, per task.

    count: question; action/transition: question + the five candidates; frameqa: question +
    answer (the official code also adds the caption ``description``, which the model never reads;
    it is left out so the vocabulary holds only words a question or answer can contain).
    """
    spec = get_task(record.task)
    if spec.multiple_choice:
        return [record.question, *record.candidates]
    if spec.target == "answer_word":
        return [record.question, str(record.answer)]
    return [record.question]


def build_word_vocab(train_records: Iterable[QARecord], min_count: int = 1,
                     specials: Sequence[str] = ()) -> Vocab:
    """Word vocabulary from **train** records only (test words become ``<unk>``)."""
    return Vocab.build((tokenize(text) for r in train_records for text in record_texts(r)),
                       min_count=min_count, specials=specials)


def build_answer_vocab(train_records: Iterable[QARecord]) -> Vocab:
    """FrameQA answer classes from **train** records only.

    A test answer never seen in training encodes to ``<unk>`` (index 1), which no prediction can
    match, so it always scores as wrong (the official code used train+test answers: 1,746 classes).
    """
    answers = []
    for r in train_records:
        if get_task(r.task).target != "answer_word":
            raise ValueError(f"build_answer_vocab needs FrameQA records, got task {r.task!r} ({r.qid})")
        answers.append(str(r.answer))
    if not answers:
        raise ValueError("build_answer_vocab: no FrameQA records given")
    return Vocab.build(answers)


# --- validation split ------------------------------------------------------------------------------

SPLIT_FORMAT = "stqa-val-split/1"


def _split_rank(seed: int, key: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def validation_keys(keys: Iterable[int], fraction: float = 0.1, seed: int = 0) -> frozenset[int]:
    """``round(fraction * #keys)`` GIF keys, chosen by a seeded hash: depends only on the set of keys
    and the seed (not on row order, numpy version or platform)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    unique = sorted(set(int(k) for k in keys))
    n_val = int(round(fraction * len(unique)))
    ranked = sorted(unique, key=lambda k: _split_rank(seed, k))
    return frozenset(ranked[:n_val])


def apply_split(records: Sequence[QARecord], val_keys: Iterable[int]) -> tuple[list[QARecord], list[QARecord]]:
    """(train, val) records by GIF key, each in the input order."""
    val = frozenset(int(k) for k in val_keys)
    return [r for r in records if r.key not in val], [r for r in records if r.key in val]


def split_validation(records: Sequence[QARecord], fraction: float = 0.1,
                     seed: int = 0) -> tuple[list[QARecord], list[QARecord]]:
    """Hold out a fixed, seeded ``fraction`` of the training GIFs (all questions of a GIF together)."""
    return apply_split(records, validation_keys((r.key for r in records), fraction, seed))


def save_split(path: str | os.PathLike, val_keys: Iterable[int], **meta) -> None:
    """Write the validation GIF keys as JSON (plus optional metadata such as seed and fraction)."""
    payload = {"format": SPLIT_FORMAT, **meta, "val_keys": sorted(int(k) for k in val_keys)}
    Path(path).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def load_split(path: str | os.PathLike) -> frozenset[int]:
    """The validation GIF keys stored by :func:`save_split`."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON split file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != SPLIT_FORMAT:
        raise ValueError(f"{path}: not a {SPLIT_FORMAT} file")
    keys = payload.get("val_keys")
    if not isinstance(keys, list) or not all(isinstance(k, int) for k in keys):
        raise ValueError(f"{path}: 'val_keys' must be a list of integers")
    return frozenset(keys)
