import json

from datasets.progress import parse_copier_log


def lines(*events):
    return "\n".join(json.dumps(e) for e in events)


def test_progress_is_the_latest_line():
    state = parse_copier_log(
        lines(
            {
                "event": "plan",
                "files_total": 10,
                "bytes_total": 1000,
                "files_skipped": 2,
                "bytes_skipped": 100,
            },
            {
                "event": "progress",
                "files_done": 4,
                "files_total": 10,
                "bytes_done": 400,
                "bytes_total": 1000,
                "rate_bytes_per_second": 200.0,
                "eta_seconds": 3.0,
            },
        )
    )
    assert (state.files_done, state.bytes_done, state.bytes_total) == (4, 400, 1000)
    assert state.rate_bytes_per_second == 200.0
    assert state.eta_seconds == 3.0
    assert not state.finished


def test_skipped_files_count_as_done_before_the_first_progress_line():
    state = parse_copier_log(
        lines(
            {
                "event": "plan",
                "files_total": 10,
                "bytes_total": 1000,
                "files_skipped": 10,
                "bytes_skipped": 1000,
            }
        )
    )
    assert (state.files_done, state.bytes_done) == (10, 1000)


def test_done_with_the_file_list():
    state = parse_copier_log(
        lines(
            {"event": "plan", "files_total": 2, "bytes_total": 30},
            {"event": "files", "files": [["m/config.json", 10]]},
            {"event": "files", "files": [["m/model.safetensors", 20]]},
            {"event": "done", "files_total": 2, "bytes_total": 30, "seconds": 0.5},
        )
    )
    assert state.finished and not state.failed
    assert state.bytes_done == 30
    assert state.files == [("m/config.json", 10), ("m/model.safetensors", 20)]


def test_error_keeps_reason_and_plain_lines_make_the_log_tail():
    text = "starting copier\n" + lines(
        {"event": "error", "reason": "AccessDenied", "message": "check the key"}
    )
    text += "\nnot json {\n"
    state = parse_copier_log(text)
    assert (state.failed, state.reason, state.message) == (True, "AccessDenied", "check the key")
    assert "starting copier" in state.log_tail()
    assert "error AccessDenied: check the key" in state.log_tail()
