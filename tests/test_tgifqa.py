"""TGIF-QA loader, tokenizer, vocabularies and validation split (real files when STQA_TGIFQA_ROOT is set)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
from dataclasses import astuple
from pathlib import Path

import pytest

from stqa.data import tgifqa
from stqa.data.tgifqa import QARecord, Vocab

REAL_ROOT = os.environ.get("STQA_TGIFQA_ROOT")
needs_real = pytest.mark.skipif(not REAL_ROOT, reason="STQA_TGIFQA_ROOT not set (CI sets it to ../shared/tgifqa)")

# Header lines for the hand-written (mostly malformed) files below; the real files pin the columns
# themselves (test_columns_are_the_official_headers).
COUNT_HEADER, MC_HEADER, FRAMEQA_HEADER = ("\t".join(tgifqa.columns(t)) for t in ("count", "action", "frameqa"))


def write_tsv(path: Path, lines: list[str]) -> Path:
    """Write raw lines as the official files end them (CRLF): for files the writer would refuse."""
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


@pytest.fixture
def fixture_root(tmp_path: Path) -> Path:
    tgifqa.write(tmp_path, "count", "train", [
        ["gif_a", "How many times does the man jump ?", 3, "COUNT1", 5],
        ["gif_b", "How many times does the cat blink ?", 0, "COUNT2", 7],
        ["gif_c", "How many times does the dog's tail wag ?", 10, "COUNT3", 9],
    ])
    tgifqa.write(tmp_path, "action", "test", [
        ["gif_a", "What does the man do 3 times ?", "jump", "sit", "run", "clap hands", "wave", 0, "ACTION1", 5],
        ["gif_d", "What does the man do after dry hair ?", "run", "pose", "drive", 'write "i love you"', "count", 3,
         "ACTION2", 11],
    ])
    tgifqa.write(tmp_path, "frameqa", "test", [
        ["gif_e", "what is the man holding ?", "guitar", 0, "FRAMEQA1", 12, "a man is holding a guitar ."],
        ["gif_f", "how many dogs are running ?", "two", 1, "FRAMEQA2", 13, "two dogs are running ."],
        ["gif_f", "what color is the dog ?", "brown", 2, "FRAMEQA3", 13, "a brown dog runs ."],
        ["gif_g", "where is the man sitting ?", "car", 3, "FRAMEQA4", 14, "a man is sitting in a car ."],
    ])
    return tmp_path


# --- loader on fixtures ----------------------------------------------------------------------------


def test_load_count_fixture(fixture_root: Path) -> None:
    records = tgifqa.load(fixture_root, "count", "train")
    assert [r.qid for r in records] == ["COUNT1", "COUNT2", "COUNT3"]
    r = records[1]
    assert r == QARecord(task="count", qid="COUNT2", key=7, gif_name="gif_b",
                         question="How many times does the cat blink ?", answer=0)
    assert r.answer == 0  # raw value kept; the 0 -> 1 mapping belongs to the model/metrics side
    assert records[2].answer == 10
    for rec in records:  # CRLF never leaks into fields
        assert all("\r" not in str(v) and "\n" not in str(v) for v in vars(rec).values())


def test_load_action_fixture_with_quoted_field(fixture_root: Path) -> None:
    records = tgifqa.load(fixture_root, "action", "test")
    assert records[0].candidates == ("jump", "sit", "run", "clap hands", "wave")
    assert records[0].answer == 0 and records[0].answer_type is None
    # quoted with doubled quotes, as in the real Test_transition file; unquoted like pandas does
    assert records[1].candidates[3] == 'write "i love you"'
    assert records[1].answer == 3
    assert tgifqa.mc_texts(records[0]) == [
        "What does the man do 3 times ? jump", "What does the man do 3 times ? sit",
        "What does the man do 3 times ? run", "What does the man do 3 times ? clap hands",
        "What does the man do 3 times ? wave"]


def test_load_frameqa_fixture(fixture_root: Path) -> None:
    records = tgifqa.load(fixture_root, "frameqa", "test")
    assert [r.answer_type for r in records] == ["object", "number", "color", "location"]
    assert [r.answer for r in records] == ["guitar", "two", "brown", "car"]
    assert records[1].key == records[2].key == 13
    assert records[0].candidates == ()
    with pytest.raises(ValueError, match="action/transition"):
        tgifqa.mc_texts(records[0])


def test_missing_file_names_expected_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Train_frameqa_question.csv"):
        tgifqa.load(tmp_path, "frameqa", "train")


def test_bad_task_and_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        tgifqa.load(tmp_path, "counting", "train")
    with pytest.raises(ValueError, match="unknown split"):
        tgifqa.load(tmp_path, "count", "val")


@pytest.mark.parametrize("lines, message", [
    (["gif_name\tquestion\tanswer\tkey\tvid_id", "g\tq ?\t3\t1\tCOUNT1"], r":1: wrong header"),
    ([], r":1: empty file"),
    ([COUNT_HEADER, "g\tq ?\t3\tCOUNT1\t1", "g2\tq ?\t3\tCOUNT2"], r":3: expected 5 tab-separated fields, got 4"),
    ([COUNT_HEADER, "g\tq ?\tthree\tCOUNT1\t1"], r":2: field 'answer' must be an integer"),
    ([COUNT_HEADER, "g\tq ?\t3\tCOUNT1\tkey1"], r":2: field 'key' must be an integer"),
    ([COUNT_HEADER, "g\tq ?\t-1\tCOUNT1\t1"], r":2: field 'answer' must be an integer written with the digits 0-9"),
    ([COUNT_HEADER, "\tq ?\t1\tCOUNT1\t1"], r":2: empty 'gif_name'"),
    ([COUNT_HEADER, "g\tq ?\t3\tCOUNT1\t1", ""], r":3: empty line"),
])
def test_malformed_count_files(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "Train_count_question.csv"
    if lines:
        write_tsv(path, lines)
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"Train_count_question\.csv" + message):
        tgifqa.load(tmp_path, "count", "train")


def test_malformed_mc_and_frameqa(tmp_path: Path) -> None:
    write_tsv(tmp_path / "Test_transition_question.csv",
              [MC_HEADER, "g\tq ?\ta\tb\tc\td\te\t5\tTRANS1\t1"])
    with pytest.raises(ValueError, match=r"Test_transition_question\.csv:2: answer index 5 out of range"):
        tgifqa.load(tmp_path, "transition", "test")
    write_tsv(tmp_path / "Test_frameqa_question.csv", [FRAMEQA_HEADER, "g\tq ?\tcar\t4\tFRAMEQA1\t1\td ."])
    with pytest.raises(ValueError, match=r"Test_frameqa_question\.csv:2: FrameQA type 4 out of range"):
        tgifqa.load(tmp_path, "frameqa", "test")


# --- writer ---------------------------------------------------------------------------------------


def test_writer_writes_the_official_bytes(tmp_path: Path) -> None:
    row = {"gif_name": "gif_d", "question": "What does the man do after dry hair ?", "a1": "run", "a2": "pose",
           "a3": "drive", "a4": 'write "i love you"', "a5": "count", "answer": 3, "vid_id": "ACTION2", "key": 11}
    path = tgifqa.write(tmp_path, "action", "test", [row])
    assert path == tmp_path / "Test_action_question.csv"
    assert path.read_bytes() == (MC_HEADER + "\r\n" + 'gif_d\tWhat does the man do after dry hair ?\trun\tpose\t'
                                 'drive\t"write ""i love you"""\tcount\t3\tACTION2\t11\r\n').encode()
    assert tgifqa.write(tmp_path, "count", "total", []).read_bytes() == (COUNT_HEADER + "\r\n").encode()


def test_writer_output_reads_back_as_the_same_rows(tmp_path: Path) -> None:
    rows = [["g1", 'the "big" dog ?', 3, "COUNT1", 1], ["g2", '"quoted" ?', 0, "COUNT2", 2 ** 63 - 1],
            ["g\u00e9", "q ? ", 10, "COUNT3", 0]]
    tgifqa.write(tmp_path, "count", "train", rows)
    assert tgifqa.load(tmp_path, "count", "train") == [
        QARecord("count", qid, key, gif, question, answer) for gif, question, answer, qid, key in rows]


@pytest.mark.parametrize("row, message", [
    (["g", "how\tmany ?", 3, "COUNT1", 1], r":2: field 'question' contains a tab or a line break"),
    (["g", "how\u2028many ?", 3, "COUNT1", 1], r":2: field 'question' contains a tab or a line break"),
    (["g", "q ?", 11, "COUNT1", 1], r":2: count answer 11 out of range 0\.\.10"),
    (["g", "q ?", -1, "COUNT1", 1], r":2: field 'answer' must be an integer"),
    (["g", "q ?", True, "COUNT1", 1], r":2: field 'answer' must be text or an integer"),
    (["", "q ?", 3, "COUNT1", 1], r":2: empty 'gif_name'"),
    (["g", "q ?", 3, "COUNT1"], r":2: expected 5 fields, got 4"),
    ({"gif_name": "g", "question": "q ?", "answer": 3, "vid_id": "COUNT1", "id": 1},
     r":2: row columns do not match the header .*missing \['key'\], unexpected \['id'\]"),
    (["g", "q \ud800 ?", 3, "COUNT1", 1], r":2: field 'question' cannot be written as UTF-8"),
])
def test_writer_refuses_what_the_reader_refuses(tmp_path: Path, row, message: str) -> None:
    with pytest.raises(ValueError, match=r"Train_count_question\.csv" + message):
        tgifqa.write(tmp_path, "count", "train", [row])
    assert not (tmp_path / "Train_count_question.csv").exists()  # nothing half-written


def test_writer_refuses_duplicate_question_ids(tmp_path: Path) -> None:
    rows = [["g1", "q ?", 3, "COUNT1", 1], ["g2", "q ?", 3, "COUNT2", 2], ["g3", "q ?", 3, "COUNT1", 3]]
    with pytest.raises(ValueError, match=r"\.csv:4: duplicate question id \(vid_id\) 'COUNT1', first on line 2"):
        tgifqa.write(tmp_path, "count", "train", rows)
    with pytest.raises(ValueError, match="unknown split"):
        tgifqa.write(tmp_path, "count", "val", [])


def test_available_tasks(fixture_root: Path, tmp_path_factory) -> None:
    assert tgifqa.available_tasks(fixture_root, "test") == ("action", "frameqa")
    assert tgifqa.available_tasks(fixture_root, "train") == ("count",)
    assert tgifqa.available_tasks(tmp_path_factory.mktemp("empty"), "train") == ()


# --- strictness: one record per line, integers, duplicates, encoding --------------------------------


def load_count(tmp_path: Path, lines: list[str]) -> list[QARecord]:
    write_tsv(tmp_path / "Train_count_question.csv", lines)
    return tgifqa.load(tmp_path, "count", "train")


def test_quote_opened_in_one_row_and_closed_later_does_not_merge_rows(tmp_path: Path) -> None:
    # The csv module alone read these 6 rows as 3 records: rows 2-4 became one question.
    rows = [f"g{i}\tq{i} ?\t3\tCOUNT{i}\t{i}" for i in range(1, 7)]
    rows[1] = 'g2\t"how many times does the man jump ?\t3\tCOUNT2\t2'
    rows[3] = 'g4\tq4 " ?\t3\tCOUNT4\t4'
    with pytest.raises(ValueError, match=r"Train_count_question\.csv:3: bad quoting \(.*a record cannot span lines"):
        load_count(tmp_path, [COUNT_HEADER, *rows])


def test_unbalanced_quote_is_reported_on_its_own_line(tmp_path: Path) -> None:
    rows = [f"g{i}\tq{i} ?\t3\tCOUNT{i}\t{i}" for i in range(1, 5)]
    rows[3] = 'g4\tq4 ?\t3\tCOUNT4\t"4'  # the last line: nothing after it to close the quote
    with pytest.raises(ValueError, match=r"\.csv:5: bad quoting"):
        load_count(tmp_path, [COUNT_HEADER, *rows])
    rows[3] = 'g4\t"q4" ?\t3\tCOUNT4\t4'  # text after the closing quote
    with pytest.raises(ValueError, match=r"\.csv:5: bad quoting"):
        load_count(tmp_path, [COUNT_HEADER, *rows])


def test_quoting_and_plain_quotes_still_work(tmp_path: Path) -> None:
    records = load_count(tmp_path, [COUNT_HEADER, 'g1\t"how many ""hops"" ?"\t3\tCOUNT1\t1',
                                    'g2\tthe "big" dog ?\t2\tCOUNT2\t2', '"g3"\tq ?\t0\tCOUNT3\t3'])
    assert [r.question for r in records] == ['how many "hops" ?', 'the "big" dog ?', "q ?"]
    assert records[2].gif_name == "g3"


@pytest.mark.parametrize("row, message", [
    ('g\t"how\tmany ?"\t3\tCOUNT1\t1', r":3: field 'question' contains a tab"),  # tab inside quotes
    ("g\thow\rmany ?\t3\tCOUNT1\t1", r":3: field 'question' contains a line break \(U\+000D\)"),  # lone CR
    ('g\t"how\rmany ?"\t3\tCOUNT1\t1', r":3: field 'question' contains a line break \(U\+000D\)"),
    ("g\thow many ?\t3\tCOUNT1\t1\x0c", r":3: field 'key' contains a line break \(U\+000C\)"),
    ("g\thow\u2028many ?\t3\tCOUNT1\t1", r":3: field 'question' contains a line break \(U\+2028\)"),
    ("g\thow many ?\t3\tCOUNT1\t1\t\x85", r":3: field 6 contains a line break \(U\+0085\)"),
])
def test_tab_or_line_break_in_a_field_is_rejected(tmp_path: Path, row: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"Train_count_question\.csv" + message):
        load_count(tmp_path, [COUNT_HEADER, "g0\tq ?\t2\tCOUNT0\t0", row])


def test_line_endings_lf_and_no_final_newline(tmp_path: Path) -> None:
    lines = [COUNT_HEADER, "g1\tq ?\t3\tCOUNT1\t1", "g2\tq ?\t0\tCOUNT2\t2"]
    crlf = load_count(tmp_path, lines)
    (tmp_path / "Train_count_question.csv").write_bytes("\n".join(lines).encode())
    assert tgifqa.load(tmp_path, "count", "train") == crlf and len(crlf) == 2


def test_bad_utf8_names_file_and_line(tmp_path: Path) -> None:
    good = f"{COUNT_HEADER}\r\ng1\tq ?\t3\tCOUNT1\t1\r\n".encode()
    (tmp_path / "Train_count_question.csv").write_bytes(good + b"g2\tq \xe9t\xe9 ?\t3\tCOUNT2\t2\r\n")
    with pytest.raises(ValueError, match=r"Train_count_question\.csv:3: not valid UTF-8: byte 0xe9 at byte 6"):
        tgifqa.load(tmp_path, "count", "train")


@pytest.mark.parametrize("value", ["1_0", "\uff13", "+3", " 3", "3 ", "-1", "", "3.0", "0x3", "\u0663", "1e1"])
@pytest.mark.parametrize("column", ["answer", "key"])
def test_count_integers_are_ascii_digits_only(tmp_path: Path, value: str, column: str) -> None:
    fields = {"answer": "3", "key": "7", column: value}
    row = f"g\tq ?\t{fields['answer']}\tCOUNT1\t{fields['key']}"
    with pytest.raises(ValueError, match=rf":2: field '{column}' must be an integer written with the digits 0-9"):
        load_count(tmp_path, [COUNT_HEADER, row])


def test_count_range(tmp_path: Path) -> None:
    records = load_count(tmp_path, [COUNT_HEADER, "g\tq ?\t10\tCOUNT1\t1", "g\tq ?\t0\tCOUNT2\t1",
                                    "g\tq ?\t007\tCOUNT3\t0"])
    assert [r.answer for r in records] == [10, 0, 7] and records[2].key == 0
    for value in ("11", "1000", "9" * 5000):
        with pytest.raises(ValueError, match=r":2: count answer 9*1*0*\.*.* out of range 0\.\.10"):
            load_count(tmp_path, [COUNT_HEADER, f"g\tq ?\t{value}\tCOUNT1\t1"])
    assert load_count(tmp_path, [COUNT_HEADER, f"g\tq ?\t2\tCOUNT1\t{2**63 - 1}"])[0].key == 2**63 - 1
    with pytest.raises(ValueError, match=r":2: field 'key' 9223372036854775808 out of range"):
        load_count(tmp_path, [COUNT_HEADER, f"g\tq ?\t2\tCOUNT1\t{2**63}"])


@pytest.mark.parametrize("task, row, message", [
    ("transition", "g\tq ?\ta\tb\tc\td\te\t\uff11\tTRANS1\t1", r":2: field 'answer' must be an integer"),
    ("transition", "g\tq ?\ta\tb\tc\td\te\t+1\tTRANS1\t1", r":2: field 'answer' must be an integer"),
    ("action", "g\tq ?\ta\tb\tc\td\te\t1\tACTION1\t1_2", r":2: field 'key' must be an integer"),
    ("action", "g\tq ?\ta\tb\tc\td\te\t10\tACTION1\t1", r":2: answer index 10 out of range 0\.\.4"),
    ("frameqa", "g\tq ?\tcar\t 1\tFRAMEQA1\t1\td .", r":2: field 'type' must be an integer"),
    ("frameqa", "g\tq ?\tcar\t-0\tFRAMEQA1\t1\td .", r":2: field 'type' must be an integer"),
])
def test_mc_and_frameqa_integers(tmp_path: Path, task: str, row: str, message: str) -> None:
    header = {"transition": MC_HEADER, "action": MC_HEADER, "frameqa": FRAMEQA_HEADER}[task]
    name = tgifqa.annotation_filename(task, "test")
    write_tsv(tmp_path / name, [header, row])
    with pytest.raises(ValueError, match=name.replace(".", r"\.") + message):
        tgifqa.load(tmp_path, task, "test")


def test_duplicate_question_id_names_both_lines(tmp_path: Path) -> None:
    rows = ["g1\tq ?\t3\tCOUNT1\t1", "g2\tq ?\t3\tCOUNT2\t2", "g3\tq ?\t3\tCOUNT3\t3", "g4\tq ?\t2\tCOUNT2\t4"]
    with pytest.raises(ValueError, match=r"\.csv:5: duplicate question id \(vid_id\) 'COUNT2', first on line 3"):
        load_count(tmp_path, [COUNT_HEADER, *rows])


def test_long_bad_values_are_shortened_in_messages(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_count(tmp_path, [COUNT_HEADER, f"g\tq ?\t{'x' * 10_000}\tCOUNT1\t1"])
    assert "(10000 characters)" in str(info.value) and len(str(info.value)) < 300


# --- loader on the real files ----------------------------------------------------------------------


@needs_real
@pytest.mark.parametrize("task, split, size", [
    ("count", "test", 3554), ("action", "test", 2274), ("transition", "test", 6232),
    ("frameqa", "test", 13691), ("count", "train", 26839), ("action", "train", 20471),
])
def test_real_split_sizes(task: str, split: str, size: int) -> None:
    assert len(tgifqa.load(REAL_ROOT, task, split)) == size


@needs_real
def test_real_sample_rows() -> None:
    by_qid = {r.qid: r for r in tgifqa.load(REAL_ROOT, "count", "test")}
    assert by_qid["COUNT12"] == QARecord("count", "COUNT12", 52, "tumblr_nezfs4uELd1u1a7cmo1_250",
                                         "How many times does the man adjust waistband ?", 3)
    action = {r.qid: r for r in tgifqa.load(REAL_ROOT, "action", "test")}
    assert action["ACTION12"].candidates == ("step like a goose", "react to hands", "making face face",
                                             "adjust waistband", "sway microphone left and right")
    assert action["ACTION12"].answer == 3 and action["ACTION12"].key == 52
    assert action["ACTION4"].gif_name == "tumblr_nk172bbdPI1u1lr18o1_250" and action["ACTION4"].answer == 4
    trans = {r.qid: r for r in tgifqa.load(REAL_ROOT, "transition", "test")}
    assert trans["TRANS23"].answer == 4 and trans["TRANS23"].candidates[4] == "sing passionately"
    assert trans["TRANS24"].answer == 0 and trans["TRANS24"].candidates[0] == "point to the camera"
    assert trans["TRANS15831"].candidates[4] == 'respond "no"'
    frameqa = {r.qid: r for r in tgifqa.load(REAL_ROOT, "frameqa", "test")}
    assert (frameqa["FRAMEQA1159"].answer, frameqa["FRAMEQA1159"].answer_type, frameqa["FRAMEQA1159"].key) == (
        "cookie", "object", 27138)
    assert (frameqa["FRAMEQA26835"].answer, frameqa["FRAMEQA26835"].answer_type) == ("two", "number")


@needs_real
def test_real_files_consistency() -> None:
    train = tgifqa.load(REAL_ROOT, "count", "train")
    test = tgifqa.load(REAL_ROOT, "count", "test")
    assert not {r.key for r in train} & {r.key for r in test}  # disjoint by GIF
    assert {r.answer for r in train} == {0, 2, 3, 4, 5, 6, 7, 8, 9, 10}  # no 1s, raw 0 kept
    frameqa = tgifqa.load(REAL_ROOT, "frameqa", "test")
    counts = {t: sum(r.answer_type == t for r in frameqa) for t in tgifqa.FRAMEQA_TYPES}
    assert counts == {"object": 5586, "number": 3148, "color": 3904, "location": 1053}
    # the official Count word vocabulary has 2,423 entries including its 2 specials and <EOS>
    assert len(tgifqa.build_word_vocab(train)) == 2423 - 1


@needs_real
@pytest.mark.parametrize("task", tgifqa.TASKS)
def test_columns_are_the_official_headers(task: str) -> None:
    header = (Path(REAL_ROOT) / tgifqa.annotation_filename(task, "test")).read_bytes().split(b"\r\n", 1)[0]
    assert tuple(header.decode().split("\t")) == tgifqa.columns(task)


# Record count and sha256 of every record (json of the QARecord fields, one per line) of each real file,
# computed with the pre-strict loader (csv.reader over the whole file): the strict reader must give
# exactly the same records.
REAL_DIGESTS = {
    ("train", "count"): (26839, "68d693ed81294a8686a8b98f92716f26618675f2564ef5f8c9a726a30011357c"),
    ("train", "action"): (20471, "9aa772083d04676115f08009b6e46660644873bdda29a6ec2fe958ff76565661"),
    ("test", "count"): (3554, "20a1f6f3c046cc9b58d675135cb2f3282038f7bc530197e9588bd6d34b976550"),
    ("test", "action"): (2274, "24663855e41504edc0b4d2ec253982b42ed43c52bdcb6ef89803769e99afc20e"),
    ("test", "transition"): (6232, "0762c37e2a32a7def1e33880d2d2ce81d68af9471858141079120e2e234b28d0"),
    ("test", "frameqa"): (13691, "ca542dd12177331bfb721a0cd0230ad37db701815adbd7b6446b046ad75b9aa6"),
    ("total", "count"): (30397, "cd81271c809c0cd534fa559ba58708bf511ca328c3f1a6150395de0d30e160f6"),
    ("total", "action"): (22749, "cf2a9300e3357fa08e66ec27b9641a3b750943e6be9287282ee0dbf75f93159b"),
}


@needs_real
@pytest.mark.parametrize("split, task", sorted(REAL_DIGESTS))
def test_real_files_load_identical_records(split: str, task: str) -> None:
    records = tgifqa.load(REAL_ROOT, task, split)
    digest = hashlib.sha256(b"".join(json.dumps(astuple(r)).encode() + b"\n" for r in records)).hexdigest()
    assert (len(records), digest) == REAL_DIGESTS[(split, task)]


def _raw_rows(path: Path) -> list[list[str]]:
    """A file's records as csv reads each line on its own (quotes undone), without the header."""
    lines = path.read_bytes().decode("utf-8").split("\r\n")
    assert lines[-1] == ""  # ends with CRLF
    return [next(csv.reader([line], delimiter="\t", strict=True)) for line in lines[1:-1]]


@needs_real
@pytest.mark.parametrize("split, task", sorted(REAL_DIGESTS))
def test_writer_reproduces_the_real_files_byte_for_byte(tmp_path: Path, split: str, task: str) -> None:
    official = Path(REAL_ROOT) / tgifqa.annotation_filename(task, split)
    written = tgifqa.write(tmp_path, task, split, _raw_rows(official))
    assert written.read_bytes() == official.read_bytes()


@needs_real
def test_real_transition_file_with_an_unclosed_quote(tmp_path: Path) -> None:
    """The reported attack on the real file: a quote opened in one question, closed three rows later."""
    shutil.copy(Path(REAL_ROOT) / "Test_transition_question.csv", tmp_path)
    path = tmp_path / "Test_transition_question.csv"
    lines = path.read_bytes().split(b"\r\n")
    lines[9] = lines[9].replace(b"\tWhat", b'\t"What', 1)
    lines[12] = lines[12].replace(b"\tWhat", b'\tWhat"', 1)
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(ValueError, match=r"Test_transition_question\.csv:10: bad quoting"):
        tgifqa.load(tmp_path, "transition", "test")


# --- tokenizer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, tokens", [
    ("How many times does the man adjust waistband ?",
     ["how", "many", "times", "does", "the", "man", "adjust", "waistband", "\\?"]),
    ("what's he doing?", ["what", "'s", "he", "doing", "\\?"]),
    ("They don't, won't! (really)", ["they", "do", "n't", ",", "wo", "n't", "!", "\\(", "really", "\\)"]),
    ("we've we're I'd you'll", ["we", "'ve", "we", "'re", "i", "'d", "you", "'ll"]),
    ('respond "no" -- ok; fine.', ["respond", "no", "ok", "fine"]),
    ("snake_case and `tick`", ["snake_case", "and", "`tick`"]),
    ("FRAMEQAorter  in   SPACE", ["frameqaorter", "in", "space"]),
    ("", []),
])
def test_tokenize_official_rules(text: str, tokens: list[str]) -> None:
    assert tgifqa.tokenize(text) == tokens


# --- vocabularies ---------------------------------------------------------------------------------


def test_vocab_basics() -> None:
    v = Vocab.build([["b", "a", "b"], ["c", "b", "a"]])
    assert v.itos == ["<pad>", "<unk>", "b", "a", "c"]  # by frequency, ties alphabetical
    assert v.encode(["a", "zzz", "c"]) == [3, 1, 4]
    assert v.encode("b") == 2 and v.encode("nope") == Vocab.UNK_INDEX == 1
    assert "a" in v and "zzz" not in v and len(v) == 5
    assert Vocab.from_dict(json.loads(json.dumps(v.to_dict()))) == v
    assert Vocab.build([["a", "b", "a"]], min_count=2).itos == ["<pad>", "<unk>", "a"]
    assert Vocab.build([["a"]], specials=["<eos>"]).itos == ["<pad>", "<unk>", "<eos>", "a"]
    with pytest.raises(ValueError, match="must start with"):
        Vocab(["a", "b"])
    with pytest.raises(ValueError):
        Vocab.from_dict({"words": []})


def test_word_vocab_train_only_and_sources(fixture_root: Path) -> None:
    train = tgifqa.load(fixture_root, "count", "train")
    vocab = tgifqa.build_word_vocab(train)
    assert "jump" in vocab and "'s" in vocab
    test = tgifqa.load(fixture_root, "action", "test")
    assert "clap" not in vocab  # test words are never added
    assert vocab.encode(tgifqa.tokenize(test[0].candidates[3])) == [1, 1]
    mc_vocab = tgifqa.build_word_vocab(test)  # action: question + candidates
    assert {"clap", "hands", "love"} <= set(mc_vocab.itos)
    fq_vocab = tgifqa.build_word_vocab(tgifqa.load(fixture_root, "frameqa", "test"))
    assert "guitar" in fq_vocab and "sitting" in fq_vocab  # question + answer
    assert "runs" not in fq_vocab  # only in a description, which is not used


def test_answer_vocab_unseen_is_unk(fixture_root: Path) -> None:
    records = tgifqa.load(fixture_root, "frameqa", "test")
    train, test = records[:3], records[3:]
    answers = tgifqa.build_answer_vocab(train)
    assert answers.itos[2:] == ["brown", "guitar", "two"]
    assert answers.encode(test[0].answer) == Vocab.UNK_INDEX  # "car" never seen in train
    with pytest.raises(ValueError, match="FrameQA"):
        tgifqa.build_answer_vocab(tgifqa.load(fixture_root, "count", "train"))


# --- validation split -----------------------------------------------------------------------------


def _records(n_gifs: int, per_gif: int = 2) -> list[QARecord]:
    return [QARecord("count", f"COUNT{k}_{i}", k, f"gif{k}", "q ?", 2)
            for k in range(100, 100 + n_gifs) for i in range(per_gif)]


def test_split_by_gif_and_deterministic() -> None:
    records = _records(200)
    train, val = tgifqa.split_validation(records, fraction=0.1, seed=0)
    val_keys = {r.key for r in val}
    assert len(val_keys) == 20 and len(val) == 40
    assert not val_keys & {r.key for r in train}  # all questions of a GIF stay together
    assert len(train) + len(val) == len(records)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    assert {r.key for r in tgifqa.split_validation(shuffled, 0.1, 0)[1]} == val_keys  # row order irrelevant
    assert {r.key for r in tgifqa.split_validation(records, 0.1, 1)[1]} != val_keys  # the seed matters
    assert [r.qid for r in train] == [r.qid for r in records if r.key not in val_keys]  # order kept


def test_split_save_load(tmp_path: Path) -> None:
    records = _records(50, 1)
    keys = tgifqa.validation_keys([r.key for r in records], 0.1, seed=3)
    path = tmp_path / "split.json"
    tgifqa.save_split(path, keys, seed=3, fraction=0.1)
    assert tgifqa.load_split(path) == keys
    assert json.loads(path.read_text())["seed"] == 3
    assert tgifqa.apply_split(records, tgifqa.load_split(path)) == tgifqa.split_validation(records, 0.1, 3)
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a stqa-val-split"):
        tgifqa.load_split(path)
    path.write_text("nonsense")
    with pytest.raises(ValueError, match="not a JSON"):
        tgifqa.load_split(path)
    with pytest.raises(ValueError, match="fraction"):
        tgifqa.validation_keys([1, 2], fraction=1.5)
