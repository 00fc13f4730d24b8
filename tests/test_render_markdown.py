"""Markdown plans, checked by rendering them to HTML with a real Markdown renderer (markdown-it-py,
CommonMark with tables, as GitHub renders comments and job summaries) and reading the HTML back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser

from markdown_it import MarkdownIt
from test_render import full_plan, queue_attrs

from topo.diff import Action, Change
from topo.errors import ApplyFailed, BrokerError
from topo.outcome import Outcome, Status, outcome_to_json, render_outcome_markdown
from topo.passwords import Password, hash_password
from topo.plan import Plan, steps
from topo.render_markdown import render_markdown
from topo.state import Key, Kind, Obj

SECRET = "Sekret-Pw-4711"


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find(self, tag: str) -> list[Node]:
        found = [self] if self.tag == tag else []
        for child in self.children:
            if isinstance(child, Node):
                found.extend(child.find(tag))
        return found


class _Tree(HTMLParser):
    VOID = frozenset({"br", "hr", "img", "input"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>: the HTML is not well nested"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def html_tree(markdown: str) -> Node:
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    parser = _Tree()
    parser.feed(html)
    parser.close()
    assert parser.stack == [parser.root], "unclosed elements"
    return parser.root


def plan_with_secrets() -> Plan:
    plan = full_plan()
    password = Password(hash_password(SECRET), plaintext=SECRET)
    old = Password(hash_password("Old-Pw-1234"))
    user = Change(
        Action.UPDATE,
        Key(Kind.USER, "", "app"),
        {"tags": [], "password": old},
        {"tags": ["management"], "password": password},
    )
    shovel = {"component": "shovel", "name": "s", "value": {"src-uri": f"amqp://u:{SECRET}@host/v"}}
    parameter = Change(Action.CREATE, Key(Kind.PARAMETER, "/", "shovel/s"), None, shovel)
    return replace(plan, changes=(*plan.changes, user, parameter))


def test_the_plan_renders_to_a_summary_banners_a_table_and_one_details_per_vhost() -> None:
    plan = plan_with_secrets()
    markdown = render_markdown(plan)
    tree = html_tree(markdown)
    heading = tree.find("h3")[0].text()
    assert heading == "topo plan: 11 to add, 5 to change, 2 to replace, 8 to destroy"
    quotes = [q.text() for q in tree.find("blockquote")]
    assert any("Data loss:" in q and "16 messages" in q and "--allow-data-loss" in q for q in quotes)
    assert any("Disruption:" in q and "replace queue" in q for q in quotes)
    table = tree.find("table")[0]
    assert [th.text() for th in table.find("th")] == ["vhost", "add", "change", "replace", "destroy"]
    rows = [[td.text() for td in tr.find("td")] for tr in table.find("tbody")[0].find("tr")]
    vhosts = sorted({c.key.vhost for c in plan.changes})
    assert [row[0] for row in rows] == [*vhosts, "total"]
    assert rows[-1] == ["total", "11", "5", "2", "8"]
    for row, vhost in zip(rows, vhosts, strict=False):
        counts = [sum(c.key.vhost == vhost and c.action is a for c in plan.changes) for a in Action]
        assert row[1:] == [str(counts[i]) for i in (0, 1, 2, 3)]  # create, update, replace, delete
    details = tree.find("details")
    per_vhost = [d for d in details if d.find("summary")[0].text().startswith("vhost ")]
    assert [d.find("summary")[0].find("code")[0].text() for d in per_vhost] == vhosts
    for section in per_vhost:
        code = section.find("code")[-1]
        assert code.attrs.get("class") == "language-diff"
    first = per_vhost[[*vhosts].index("/")].find("pre")[0].text()
    assert '-/+ queue "payments"' in first and '+ exchange "orders"' in first
    assert "(sensitive value changed)" in markdown and "amqp://u:***@host/v" in markdown
    assert SECRET not in markdown and "Old-Pw-1234" not in markdown
    assert any(d.find("summary")[0].text().startswith("Unmanaged: 3 objects") for d in details)


def test_hostile_names_do_not_break_the_structure() -> None:
    names = ["</details><script>alert(1)</script>", "a|b", "```", "<!--", "*x*  \n# y"]
    changes = [Change(Action.CREATE, Key(Kind.QUEUE, name, name), None, queue_attrs()) for name in names]
    markdown = render_markdown(Plan(changes))
    tree = html_tree(markdown)
    assert not tree.find("script") and len(tree.find("details")) == len(names)
    assert len(tree.find("tbody")[0].find("tr")) == len(names) + 1
    shown = [d.find("summary")[0].find("code")[0].text() for d in tree.find("details")]
    assert shown == sorted(name.replace("\n", " ") for name in names)
    for section, name in zip(tree.find("details"), sorted(names), strict=True):
        assert f"+ queue {json.dumps(name)}" in section.find("pre")[0].text()


def test_an_empty_plan_says_so_and_lists_unmanaged_objects() -> None:
    plan = Plan([], [Obj(Key(Kind.QUEUE, "/", "manual"), queue_attrs())])
    tree = html_tree(render_markdown(plan))
    assert tree.find("h3")[0].text() == "topo plan: no changes"
    assert not tree.find("table") and not tree.find("blockquote")
    assert 'queue "manual" in vhost /' in tree.find("details")[0].text()


def test_an_apply_outcome_renders_with_failures_and_not_attempted_steps() -> None:
    plan = full_plan()
    all_steps = steps(plan.changes)
    outcome = Outcome(plan)
    for step in all_steps[:3]:
        outcome.record(0, 0, step)
    failed = BrokerError("create queue 'x'", 401, "access refused")
    outcome.failed_with(ApplyFailed("apply stopped", [(all_steps[3], failed)], all_steps[4:]))
    assert outcome.status is Status.FAILED
    document = outcome_to_json(outcome)
    assert document["outcome"] == "failed" and document["steps"]["total"] == len(all_steps)
    assert len(document["steps"]["done"]) == 3 and len(document["steps"]["not_attempted"]) == len(all_steps) - 4
    assert document["steps"]["failed"][0]["status"] == 401
    tree = html_tree(render_outcome_markdown(outcome))
    assert tree.find("h3")[0].text().startswith("topo apply: ")
    assert tree.find("h4")[0].text() == "Result: failed"
    items = [li.text() for li in tree.find("li")]
    assert f"done: 3 of {len(all_steps)} steps" in items and "failed: 1" in items
    assert any(item.startswith("failed: ") and "HTTP 401" in item for item in items)
