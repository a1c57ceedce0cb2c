"""A small reader of matrix.html for the tests (the unit tests read the page as written,
the Chromium test the DOM the browser returns): rows of cells, links, ids, the title."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[tuple[str, str, str]]] = []  # (class, title, text) per th/td
        self.cells: list[dict[str, str]] = []  # every <td>: class, title, text
        self.hrefs: list[str] = []
        self.ids: list[str] = []
        self.title = ""
        self._open: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a":
            self.hrefs.append(a["href"])
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.rows[-1].append((a.get("class", ""), a.get("title", ""), ""))
            if tag == "td":
                self.cells.append({"class": a.get("class", ""), "title": a.get("title", ""),
                                   "text": ""})
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if "title" in self._open:
            self.title += data
        elif "td" in self._open or "th" in self._open:
            cls, title, text = self.rows[-1][-1]
            self.rows[-1][-1] = (cls, title, text + data)
            if "td" in self._open:
                self.cells[-1]["text"] += data
