"""Corpora: the Brown Corpus back to text, and each source's documents, pieces and errors."""

import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2_core import corpora, data
from gpt2_core.tokenizer import gpt2_tokenizer

TAGGED = ("\n\n\t``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd (/( as/cs "
          "Mr./np Jones/np did/dod )/) ./.\n\tWas/bedz it/pps Jr./np ./.\n\n\n"
          "\tMore/ap '/' pro/jj '/' letters/nns ;/. why/wrb ?/.\n\n")


def test_brown_text_drops_tags_and_rejoins_punctuation():
    assert corpora.brown_text(TAGGED) == (
        '"Only a handful", the jury said (as Mr. Jones did). Was it Jr.\n\n'
        "More 'pro' letters; why?")


def brown_zip(path, files: dict[str, str], cats: str):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("brown/", "")
        for name, text in files.items():
            zf.writestr(f"brown/{name}", text)
        zf.writestr("brown/cats.txt", cats)
        zf.writestr("brown/README", "about")
    return path


def test_brown_documents_come_in_id_order_with_their_genre(tmp_path):
    archive = brown_zip(tmp_path / "brown.zip", {"cb02": "Why/wrb ?/.", "ca01": TAGGED},
                        "ca01 news\ncb02 editorial\n")
    documents = list(corpora.brown_documents(archive))
    assert [(d.id, d.genre, d.genre_name) for d in documents] == [("ca01", "a", "news"),
                                                                  ("cb02", "b", "editorial")]
    assert documents[1].text == "Why?"


def test_brown_categories_that_disagree_with_the_ids_are_refused(tmp_path):
    archive = brown_zip(tmp_path / "brown.zip", {"ca01": TAGGED}, "ca01 humor\n")
    with pytest.raises(corpora.CorpusError, match="cats.txt, line 1: ca01 is 'humor'"):
        list(corpora.brown_documents(archive))


def test_the_real_brown_corpus_through_the_registry(mirror):
    documents = list(corpora.brown_documents())
    assert len(documents) == 500 and len({d.genre for d in documents}) == 15
    assert {d.genre_name for d in documents} == set(corpora.BROWN_GENRES.values())
    first = documents[0]
    assert (first.id, first.genre_name) == ("ca01", "news")
    assert first.text.startswith("The Fulton County Grand Jury said Friday an investigation of "
                                 "Atlanta's recent primary election produced \"no evidence\" that "
                                 "any irregularities took place.\n\nThe jury further said")
    assert "/" not in first.text and " ," not in first.text and "``" not in first.text
    assert "non-commercial" in data.REGISTRY["brown"].license


# --- pieces of long texts ----------------------------------------------------------------------
TRICKY = ("Hello  world!\n\n  It's 2024's   end...\tnumbers 123 456\n \n\n"
          "\u00e9t\u00e9 \u4e2d\u6587 's 'll\r\n  done?!  a    b\n\n\n c \n   \n d")


@pytest.mark.parametrize("piece_chars", [1, 3, 7, 20])
def test_cut_pieces_tokenize_exactly_like_the_whole_text(piece_chars):
    text = TRICKY * 3
    encode = gpt2_tokenizer().encode_ordinary
    for size in (1, 2, 3, 5, 8):
        chunks = (text[i:i + size] for i in range(0, len(text), size))
        pieces = list(corpora.text_pieces(chunks, piece_chars=piece_chars))
        assert "".join(p for p, _ in pieces) == text and len(pieces) > 5
        assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
        assert sum((encode(p) for p, _ in pieces), []) == encode(text), size


@pytest.mark.parametrize("separator", ["\n\n", "THE END"])
def test_separator_cuts_documents_even_across_chunks(separator):
    text = f"one{separator}two two{separator}{separator}three\n"
    for size in (1, 2, 3, 100):
        chunks = (text[i:i + size] for i in range(0, len(text), size))
        documents, current = [], ""
        for piece, last in corpora.text_pieces(chunks, separator, piece_chars=2):
            current += piece
            if last:
                documents.append(current)
                current = ""
        assert documents == ["one", "two two", "", "three\n"], size


def test_text_files_invalid_utf8_names_the_line_and_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "READ_BYTES", 19)          # the first read ends in \xc3
    path = tmp_path / "bad.txt"
    path.write_bytes("caf\u00e9\nline two\n".encode() + b"ok \xc3(\n")
    source = corpora.open_source(path)
    with pytest.raises(corpora.CorpusError, match=r"bad.txt, line 3: not UTF-8 .* at byte 18"):
        list(source.pieces())


def test_multibyte_characters_split_across_reads_decode(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "READ_BYTES", 3)
    path = tmp_path / "a.txt"
    path.write_text("\u00e9\u4e2d\u6587 ok", encoding="utf-8")
    assert "".join(p.text for p in corpora.open_source(path).pieces()) == "\u00e9\u4e2d\u6587 ok"


def test_a_folder_is_its_files_sorted_recursively_without_hidden_ones(tmp_path):
    for name in ("b.txt", "a/z.txt", "a/b.md", ".hidden", "a/.git/config"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    source = corpora.open_source(tmp_path)
    assert [p.text for p in source.pieces()] == ["a/b.md", "a/z.txt", "b.txt"]
    assert [(p.document, p.text) for p in source.pieces(start=2)] == [(2, "b.txt")]
    assert source.describe()["files"] == 3


def test_an_unreadable_file_is_named(tmp_path):
    source = corpora.TextFiles([tmp_path / "gone.txt"], tmp_path)
    with pytest.raises(corpora.CorpusError, match="gone.txt: cannot read it"):
        list(source.pieces())


# --- JSON Lines and Parquet --------------------------------------------------------------------
def test_json_lines_skip_blank_lines_and_start_late(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b", "id": 2}\n{"text": "c"}\n')
    source = corpora.open_source(path)
    assert [(p.document, p.text, p.where[-6:]) for p in source.pieces(1)] == [
        (1, "b", "line 3"), (2, "c", "line 4")]


@pytest.mark.parametrize("line, error", [
    ("{not json", "line 2: not valid JSON"),
    ("[1, 2]", "line 2: a JSON list, not an object"),
    ('{"body": "x"}', "line 2: no field 'text' \\(the object has: 'body'\\)"),
    ('{"text": 5}', "line 2: field 'text' is a int, not a string"),
])
def test_bad_json_lines_name_the_line(tmp_path, line, error):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(corpora.CorpusError, match=error):
        list(corpora.open_source(path).pieces())


def write_parquet(path, texts, column="text"):
    pq.write_table(pa.table({column: texts, "n": np.arange(len(texts))}), path, row_group_size=3)
    return path


def test_parquet_reads_the_column_in_batches_from_any_row(tmp_path, monkeypatch):
    monkeypatch.setattr(corpora, "PARQUET_ROWS", 2)
    texts = [f"row {i}" for i in range(8)]
    source = corpora.open_source(write_parquet(tmp_path / "t.parquet", texts))
    assert [p.text for p in source.pieces()] == texts
    assert [(p.document, p.text) for p in source.pieces(start=4)] == [(i, texts[i])
                                                                      for i in range(4, 8)]


def test_parquet_without_the_column_or_with_a_null_is_named(tmp_path):
    path = write_parquet(tmp_path / "t.parquet", ["a", None], column="body")
    with pytest.raises(corpora.CorpusError, match="no column 'text' \\(columns: 'body', 'n'\\)"):
        list(corpora.open_source(path).pieces())
    with pytest.raises(corpora.CorpusError, match="t.parquet, row 1: column 'body' is null"):
        list(corpora.open_source(path, field="body").pieces())
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(corpora.CorpusError, match="fake.parquet: cannot read it as Parquet"):
        list(corpora.open_source(tmp_path / "fake.parquet").pieces())


def test_unknown_names_and_non_text_data_sets_are_refused():
    with pytest.raises(corpora.CorpusError, match="no such file or folder"):
        corpora.open_source("no-such-corpus")
    with pytest.raises(corpora.CorpusError, match="'sms-spam' is not a text corpus"):
        corpora.open_source("sms-spam")

