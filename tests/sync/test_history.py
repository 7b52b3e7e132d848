"""ObjectHistory answers "what was this object at revision r" for the retained window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from epsync.sync.history import ObjectHistory


def test_states_by_revision_and_transitions() -> None:
    history = ObjectHistory()
    history.record("a", 5, b"a5", before=(0, None))
    history.record("b", 6, b"b6", before=(2, b"b2"))
    history.record("a", 8, None, before=(5, b"a5"))
    assert history.state_at("a", 4) == (0, None)
    assert history.state_at("a", 5) == (5, b"a5")
    assert history.state_at("a", 7) == (5, b"a5")
    assert history.state_at("a", 8) == (8, None)
    assert history.state_at("b", 5) == (2, b"b2")
    assert [(t.revision, t.key, t.before, t.after) for t in history.transitions_after(5)] == [
        (6, "b", (2, b"b2"), (6, b"b6")),
        (8, "a", (5, b"a5"), (8, None)),
    ]


def test_trim_keeps_the_state_at_the_cut_and_forgets_unchanged_keys() -> None:
    history = ObjectHistory()
    history.record("a", 1, b"a1", before=(0, None))
    history.record("b", 2, b"b2", before=(0, None))
    history.record("a", 3, b"a3", before=(1, b"a1"))
    history.trim(2)
    assert not history.tracks("b")  # its only change is gone: the cache's current state is it
    assert history.tracks("a")
    assert history.state_at("a", 2) == (1, b"a1")
    assert history.state_at("a", 3) == (3, b"a3")
    assert len(history) == 1
    assert [t.revision for t in history.transitions_after(0)] == [3]


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=40), st.integers(0, 45))
def test_state_at_agrees_with_a_replayed_log(changes: list[tuple[str, bool]], cut: int) -> None:
    history = ObjectHistory()
    current: dict[str, tuple[int, bytes | None]] = {}
    log: list[dict[str, tuple[int, bytes | None]]] = [dict(current)]
    for revision, (key, delete) in enumerate(changes, start=1):
        value = None if delete else f"{key}{revision}".encode()
        history.record(key, revision, value, before=current.get(key, (0, None)))
        current[key] = (revision, value)
        log.append(dict(current))
    history.trim(cut)
    for revision in range(min(cut, len(changes)), len(changes) + 1):
        for key in "abc":
            expected = log[revision].get(key, (0, None))
            actual = history.state_at(key, revision) if history.tracks(key) else current.get(key, (0, None))
            assert actual == expected, (key, revision)
