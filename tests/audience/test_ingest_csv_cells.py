"""A CSV record is validated as the cells it is read as, by the same RowValidator rules a JSON row meets."""

from __future__ import annotations

import json

from audience.ingest import validate
from audience.ingest.engine import inspect_file, iter_chunks
from bench import ingest_validate
from tests.ingest import write


def stage_rows(path) -> tuple[list[list[str]], list]:
    layout = inspect_file(str(path), path.suffix.lstrip("."))
    results = [validate.process_chunk(chunk, layout, 1) for chunk in iter_chunks(str(path), layout)[0]]
    lines = b"".join(result.copy_data for result in results).decode().splitlines()
    return [line.split("\t") for line in lines], [problem for result in results for problem in result.problems]


def test_short_long_and_multi_topic_records_are_placed_by_their_columns(tmp_path):
    path = write(
        tmp_path,
        "cells.csv",
        "phone,topics,tags,age\n"
        "+254712345678,vip,news,31,,\n"  # blank cells past the header's columns
        "+254712345679,,alerts\n"  # short: no age
        "+254712345680\n",
    )
    rows, found = stage_rows(path)
    assert found == []
    by_phone = {row[2]: row for row in rows}
    columns = validate.STAGE_COLUMNS
    assert by_phone["+254712345678"][columns.index("topics")] == "{vip,news}"
    assert by_phone["+254712345678"][columns.index("attributes")] == '{"age":31}'
    assert by_phone["+254712345679"][columns.index("topics")] == "{alerts}"
    assert by_phone["+254712345679"][columns.index("attributes")] == "\\N"
    assert by_phone["+254712345680"][columns.index("topics")] == "\\N"
    assert by_phone["+254712345680"][columns.index("channel")] == "\\N"


def test_a_csv_record_and_the_same_json_object_make_the_same_stage_line(tmp_path):
    csv_path = write(
        tmp_path,
        "same.csv",
        "phone,name,channel,topics,age,plan,note\n"
        "whatsapp:+254712345678,Amina,,vip|news,31,=SUM(A1),\n"
        "+254 712 345 679,Bob,sms,,4.50,pro,x\n"
        "0712,Bad,,,1,free,\n",
    )
    json_path = write(
        tmp_path,
        "same.jsonl",
        "\n".join(
            json.dumps(record)
            for record in (
                {
                    "phone": "whatsapp:+254712345678",
                    "name": "Amina",
                    "topics": "vip|news",
                    "age": "31",
                    "plan": "=SUM(A1)",
                },
                {
                    "phone": "+254 712 345 679",
                    "name": "Bob",
                    "channel": "sms",
                    "age": "4.50",
                    "plan": "pro",
                    "note": "x",
                },
                {"phone": "0712", "name": "Bad", "age": "1", "plan": "free"},
            )
        )
        + "\n",
    )
    csv_rows, csv_problems = stage_rows(csv_path)
    json_rows, json_problems = stage_rows(json_path)
    assert [row[1:] for row in csv_rows] == [row[1:] for row in json_rows]  # all but the line number
    assert len(csv_rows) == 2 and csv_rows[0][validate.STAGE_COLUMNS.index("channel")] == "whatsapp"
    # The same problems: the formula-like plan's warning and the bad phone's error (lines differ by the header).
    assert [problem[2:4] for problem in csv_problems] == [problem[2:4] for problem in json_problems]
    assert [problem[2] for problem in csv_problems] == ["warning", "error"]


def test_the_validation_benchmark_prints_its_figures_and_baseline(capsys):
    assert ingest_validate.main(["--rows", "300", "--repeats", "1"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["rows"] == 300 and 0 < figures["valid_rows"] < 300
    assert figures["validate_us_per_row"] > figures["parse_us_per_row"] > 0
    assert figures["pre_merge"] == {"commit": "e0f3e8d", "validate_us_per_row": 7.5}
