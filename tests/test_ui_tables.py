"""Read-only tables shown as plain HTML: every cell shown, nothing a name holds taken as markup."""

from __future__ import annotations

import pandas as pd

from tl_app.ui.adapters import html_table


def test_a_table_shows_each_column_and_row_and_escapes_what_names_hold():
    df = pd.DataFrame({"class": ["cat", "<img src=x onerror=alert(1)>", "R&D"], "recall": ["90%", "80%", "70%"]})
    html = html_table(df, "Per class <b>")
    assert html.count("<th>") == 2 and html.count("<tr>") == 4  # header row and three rows
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "R&amp;D" in html
    assert "Per class &lt;b&gt;" in html
    assert html_table(pd.DataFrame(), "Per class") == ""  # no run: nothing shown
