# SPDX-License-Identifier: Apache-2.0
"""Durations (LOOPWATCH_INTERVAL, the runner's --interval) are read with the
project's one grammar: every case of tests/data/durations.tsv, the table the
library's and the sidecar's tests read too."""

import pytest

from conftest import SOURCE_DIR

from loopwatch import _heartbeat

TABLE = SOURCE_DIR / "tests" / "data" / "durations.tsv"


def _cases():
    cases = []
    for n, line in enumerate(TABLE.read_text(encoding="utf-8").split("\n"), 1):
        if not line or line.startswith("#"):
            continue
        text, _, value = line.rpartition("\t")
        assert _, "%s:%d: no tab" % (TABLE, n)
        if text == "<empty>":
            text = ""
        cases.append(pytest.param(text, None if value == "error" else int(value),
                                  id="line%d" % n))
    assert len(cases) >= 10
    return cases


@pytest.mark.parametrize("text,ns", _cases())
def test_every_case_of_the_table(text, ns):
    if ns is None:
        with pytest.raises(ValueError, match="expected a duration with a unit"):
            _heartbeat.parse_duration(text)
    else:
        assert _heartbeat.parse_duration(text) == ns / 1e9


def test_not_a_string_is_a_type_error():
    with pytest.raises(TypeError):
        _heartbeat.parse_duration(5)
