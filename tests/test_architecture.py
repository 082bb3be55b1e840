"""The house rules of docs/architecture.md, checked on the code as it stands.

- One owner per table: only the owning wing's modules hold SQL that names its tables (the read
  model may read the event log it is built from).
- Who may import whom: the import-linter contracts in pyproject.toml.
- The product never loads the fake Twitch unless `run --demo` asks for it.
- Nothing in the repository points outside it.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "streamerhub"

EVENT_LOG = {
    "twitch_events",
    "twitch_follows",
    "twitch_subscriptions",
    "twitch_cheers",
    "twitch_raids",
    "twitch_redemptions",
    "twitch_streams",
    "twitch_channel_updates",
    "twitch_goals",
    "twitch_hype_trains",
    "twitch_polls",
    "twitch_predictions",
    "twitch_bits_uses",
    "twitch_bits",
    "twitch_automatic_redemptions",
    "twitch_chat_messages",
    "twitch_chat_notifications",
    "twitch_ad_breaks",
    "twitch_shoutouts",
    "twitch_charity",
    "twitch_shared_chats",
    "dead_letters",
    "eventsub_gaps",
}
# wing (a package, or a top-level module) -> the tables whose SQL lives there.
OWNERS: dict[str, set[str]] = {
    "bot": {"twitch_channels", "eventsub_subscriptions"},
    "events": EVENT_LOG,
    "analytics": {
        "analytics_event_rollup",
        "analytics_viewer_rollup",
        "stream_sessions",
        "viewer_samples",
        "viewer_sample_gaps",
        "twitch_totals",
        "follower_checks",
        "analytics_activity_rollup",
        "analytics_chatters",
        "analytics_chatter_ids",
        "analytics_chatter_days",
        "analytics_chatter_sets",
        "analytics_session_chatters",
        "analytics_session_supporters",
    },
    "ffmpeg": {
        "videos",
        "stream_targets",
        "stream_jobs",
        "stream_job_videos",
        "stream_job_targets",
        "stream_runs",
        "stream_channel_updates",
        "stream_linked_accounts",
        "stream_linked_samples",
    },
    "web": {"web_users", "web_sessions", "web_preferences"},
    "chatbot": {
        "chatbot_settings",
        "chatbot_commands",
        "chatbot_timers",
        "chatbot_event_messages",
        "chatbot_log",
    },
    "db.py": {"schema_migrations"},
}
OWNERS["bot"] |= {"twitch_conduits", "twitch_conduit_shards"}  # conduit mode (bot/conduit.py)
OWNERS["bot"] |= {"twitch_bot_accounts"}  # the chat bot's own account (bot/botaccount.py)
OWNERS["bot"] |= {"twitch_app"}  # the app credentials entered on the dashboard (bot/credentials.py)
OWNERS["ffmpeg"] |= {"multistream_leases"}  # which daemon runs the jobs (ffmpeg/lease.py)
# Read grants: the read model reads the event log it is built from (never writes it).
READS: dict[str, set[str]] = {"analytics": EVENT_LOG}
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|JOIN|TABLE)\b")
WRITE = re.compile(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE)\s+(\w+)", re.IGNORECASE)


def wing_of(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.name


def sql_strings(path: Path) -> list[tuple[int, str]]:
    """Every string literal in the file that reads like SQL, with its line."""
    found = []
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    for tok in tokens:
        if tok.type == tokenize.STRING and SQL.search(tok.string):
            found.append((tok.start[0], tok.string))
        elif (
            sys.version_info >= (3, 12)
            and tok.type == tokenize.FSTRING_MIDDLE
            and SQL.search(tok.string)
        ):
            found.append((tok.start[0], tok.string))
    return found


def ownership_violations(root: Path = PACKAGE) -> list[str]:
    owner_of = {table: wing for wing, tables in OWNERS.items() for table in tables}
    names = re.compile(r"\b(" + "|".join(sorted(owner_of, key=len, reverse=True)) + r")\b")
    problems = []
    for path in sorted(root.rglob("*.py")):
        wing = wing_of(path, root)
        if wing == "fake_twitch":
            continue
        for line, text in sql_strings(path):
            written = {m.group(2) for m in WRITE.finditer(text)}
            for table in set(names.findall(text)):
                if owner_of[table] == wing:
                    continue
                if table in READS.get(wing, set()) and table not in written:
                    continue
                problems.append(
                    f"{path.relative_to(root)}:{line} names {table} (owned by {owner_of[table]}/)"
                )
    return problems


def test_every_table_has_one_owner_and_only_it_holds_sql_naming_it() -> None:
    assert ownership_violations() == []


def test_the_ownership_check_sees_a_table_named_outside_its_wing(tmp_path: Path) -> None:
    web = tmp_path / "web"
    web.mkdir()
    (web / "page.py").write_text('Q = "SELECT title FROM stream_jobs WHERE id = $1"\n')
    (web / "own.py").write_text('Q = "SELECT 1 FROM web_users"\n')
    analytics = tmp_path / "analytics"
    analytics.mkdir()
    (analytics / "read.py").write_text('Q = "SELECT count(*) FROM twitch_events"\n')
    (analytics / "write.py").write_text('Q = "DELETE FROM twitch_events WHERE true"\n')
    found = ownership_violations(tmp_path)
    assert len(found) == 2
    assert "web/page.py:1 names stream_jobs (owned by ffmpeg/)" in found[1]
    assert "analytics/write.py:1 names twitch_events (owned by events/)" in found[0]


def test_every_table_of_the_schema_has_an_owner() -> None:
    schema = (ROOT / "schema.sql").read_text()
    tables = set(re.findall(r"CREATE TABLE (\w+)", schema))
    owned = set().union(*OWNERS.values())
    assert tables - owned == set()


def test_import_contracts_hold() -> None:
    check = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    run = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_the_daemon_without_demo_never_loads_the_fake_twitch(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from streamerhub.config import load_settings\n"
        "from streamerhub.app import build_app\n"
        "import streamerhub.commands.main\n"
        f"build_app(load_settings(None, {str(tmp_path)!r}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('streamerhub.fake_twitch')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("pattern", [r"\.\./shared", r"/work/", r"shared/reference"])
def test_nothing_in_the_repository_points_outside_it(pattern: str) -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    hits = []
    for name in tracked.stdout.split():
        path = ROOT / name
        if (
            path.suffix in {".py", ".md", ".toml", ".sql", ".html", ".js", ".css", ".sh", ""}
            and path.is_file()
            and path.name != Path(__file__).name
        ):
            text = path.read_text(errors="replace")
            if re.search(pattern, text):
                hits.append(name)
    assert hits == []
