"""processing/runs.py: run starts and ends from hand-built batch-id sequences."""

from __future__ import annotations

from biopilot.samples import BAD_NO_COMMUNICATION, BAD_SENSOR_FAILURE, GOOD, UNCERTAIN_LAST_USABLE_VALUE
from processing.runs import Change, PhaseSpan, RunEvent, detect_phases, detect_runs

START, END = Change.START, Change.END


def test_nothing_in_nothing_out() -> None:
    assert detect_runs([], None) == ([], None)
    assert detect_runs([], "B-1") == ([], "B-1")


def test_a_run_starts_at_the_first_sample_carrying_its_id() -> None:
    events, current = detect_runs([(10, "", GOOD), (20, "B-1", GOOD), (30, "B-1", GOOD)], None)
    assert events == [RunEvent(START, "B-1", 20)]
    assert current == "B-1"


def test_a_change_of_id_ends_one_run_and_starts_the_next_at_the_same_sample() -> None:
    events, current = detect_runs([(1, "A", GOOD), (2, "A", GOOD), (3, "B", GOOD), (4, "B", GOOD)], None)
    assert events == [RunEvent(START, "A", 1), RunEvent(END, "A", 3), RunEvent(START, "B", 3)]
    assert current == "B"


def test_a_blank_id_ends_the_run() -> None:
    events, current = detect_runs([(1, "A", GOOD), (2, "", GOOD), (3, "", GOOD), (4, "B", GOOD)], None)
    assert events == [RunEvent(START, "A", 1), RunEvent(END, "A", 2), RunEvent(START, "B", 4)]
    assert current == "B"


def test_none_and_whitespace_only_ids_are_blank() -> None:
    events, current = detect_runs(
        [(1, "A", GOOD), (2, "   ", GOOD), (3, None, GOOD), (4, "\t\n", GOOD)], None
    )
    assert events == [RunEvent(START, "A", 1), RunEvent(END, "A", 2)]
    assert current is None


def test_ids_are_compared_without_surrounding_whitespace() -> None:
    events, current = detect_runs([(1, "A", GOOD), (2, " A ", GOOD), (3, "A\n", GOOD)], None)
    assert events == [RunEvent(START, "A", 1)]
    assert current == "A"


def test_bad_status_samples_say_nothing_about_the_batch() -> None:
    samples = [
        (1, "A", GOOD),
        (2, "", BAD_NO_COMMUNICATION),  # a lost connection is not the end of the run
        (3, "X", BAD_SENSOR_FAILURE),  # nor is a bad value a new batch
        (4, "A", GOOD),
        (5, "B", BAD_SENSOR_FAILURE),
        (6, "B", GOOD),  # the change shows at the first good sample carrying it
    ]
    events, current = detect_runs(samples, None)
    assert events == [RunEvent(START, "A", 1), RunEvent(END, "A", 6), RunEvent(START, "B", 6)]
    assert current == "B"


def test_uncertain_status_samples_count() -> None:
    events, _ = detect_runs(
        [(1, "A", UNCERTAIN_LAST_USABLE_VALUE), (2, "", UNCERTAIN_LAST_USABLE_VALUE)], None
    )
    assert events == [RunEvent(START, "A", 1), RunEvent(END, "A", 2)]


def test_an_open_batch_carried_in_continues_without_a_new_start() -> None:
    events, current = detect_runs([(100, "A", GOOD), (200, "A", GOOD)], "A")
    assert events == []
    assert current == "A"


def test_an_open_batch_carried_in_is_ended_by_the_first_different_sample() -> None:
    events, current = detect_runs([(100, "B", GOOD)], "A")
    assert events == [RunEvent(END, "A", 100), RunEvent(START, "B", 100)]
    assert current == "B"
    events, current = detect_runs([(100, " ", GOOD)], "A")
    assert events == [RunEvent(END, "A", 100)]
    assert current is None


def test_the_same_id_after_a_blank_starts_again() -> None:
    events, current = detect_runs([(1, "A", GOOD), (2, "", GOOD), (3, "A", GOOD)], None)
    assert events == [RunEvent(START, "A", 1), RunEvent(END, "A", 2), RunEvent(START, "A", 3)]
    assert current == "A"


def test_detection_in_two_chunks_equals_detection_in_one() -> None:
    # What the service does between passes: the open batch after chunk 1 is carried into chunk 2.
    samples = [(1, "", GOOD), (2, "A", GOOD), (3, "A", GOOD), (4, "B", GOOD), (5, "", GOOD), (6, "C", GOOD)]
    whole, whole_current = detect_runs(samples, None)
    for cut in range(len(samples) + 1):
        first, carried = detect_runs(samples[:cut], None)
        second, current = detect_runs(samples[cut:], carried)
        assert first + second == whole, cut
        assert current == whole_current == "C"


# -- phases --------------------------------------------------------------------------------------------
def test_phases_from_a_phase_tag() -> None:
    samples = [
        (1, "fill", GOOD),
        (2, "fill", GOOD),
        (3, "batch", GOOD),
        (4, "", GOOD),  # blank: says nothing
        (5, "oops", BAD_SENSOR_FAILURE),  # bad: says nothing
        (6, "fed_batch", GOOD),
        (9, "harvest", UNCERTAIN_LAST_USABLE_VALUE),
    ]
    assert detect_phases(samples, end_us=12) == [
        PhaseSpan("fill", 1, 3),
        PhaseSpan("batch", 3, 6),
        PhaseSpan("fed_batch", 6, 9),
        PhaseSpan("harvest", 9, 12),
    ]
    # live run: the last phase is open
    assert detect_phases(samples[:3], None)[-1] == PhaseSpan("batch", 3, None)


def test_no_phase_samples_no_phases() -> None:
    assert detect_phases([], 10) == []
    assert detect_phases([(1, "", GOOD), (2, None, GOOD)], 10) == []


def test_a_repeated_phase_name_after_another_is_a_new_phase() -> None:
    spans = detect_phases([(1, "a", GOOD), (2, "b", GOOD), (3, "a", GOOD)], 4)
    assert [(p.name, p.start_us, p.end_us) for p in spans] == [("a", 1, 2), ("b", 2, 3), ("a", 3, 4)]
