"""The benchmark suite: its plan, and the report `make bench` writes into bench/README.md from `bench/results.json`."""

from __future__ import annotations

import pytest

from bench.report import END, START, table, write_table

LOAD = {
    "bench": "load.poll_latency",
    "interface": "rest",
    "call": "get_tune",
    "clients": 8,
    "calls_per_s": 101.8,
    "errors": 0,
    "training_steps_per_s": 1.67,
    "p99": 87.2795,
    "value": 35.251955,
    "unit": "ms",
    "device_name": "AMD EPYC (2 cores)",
    "threads": 2,
    "torch": "2.13.0+cpu",
    "commit": "abc1234",
}
CONTEXT = {"device_name": "AMD EPYC (2 cores)", "threads": 2, "torch": "2.13.0+cpu", "commit": "abc1234"}
STEP = {"bench": "train.step_time", "model": "tiny", "batch_size": 1, "value": 0.0592, "unit": "s/step", **CONTEXT}
REAL = {**STEP, "model": "sd15-arch", "value": 4.72}


def test_each_figure_is_a_row_with_its_value_companions_and_the_command_that_measures_it():
    rows = table([STEP, REAL, LOAD]).splitlines()
    assert rows[0] == "Last run: device_name `AMD EPYC (2 cores)`, threads `2`, torch `2.13.0+cpu`, commit `abc1234`."
    [step] = [row for row in rows if "model=tiny" in row]
    assert "| 0.0592 s/step |" in step and "`python -m bench --only train`" in step
    [real] = [row for row in rows if "model=sd15-arch" in row]
    assert "| 4.72 s/step |" in real and "`python -m bench --only real`" in real
    [load] = [row for row in rows if row.startswith("| `load.poll_latency`")]
    assert "interface=rest, clients=8" in load and "| 35.3 ms | 87.3 ms |" in load
    assert "calls_per_s 102, errors 0, training_steps_per_s 1.67" in load


def test_the_readme_keeps_everything_outside_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nintro\n\n{START}\nold table\n{END}\n\n## A record\n")
    write_table([STEP], readme)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n") and text.endswith(f"{END}\n\n## A record\n")
    assert "old table" not in text and "train.step_time" in text

    write_table([], readme)
    assert "_No results yet: run `make bench`._" in readme.read_text()


JOBS = {"bench": "jobs.submit", "part": "push_training_set", "branch": "tiny", "steps": 20, "value": 0.214,
        "unit": "s", **CONTEXT}  # fmt: skip
FOLLOW = {"bench": "jobs.follow_cpu", "cpu_ms_per_min": 177.0, "log_ms_per_line": 0.4, "value": 65.0, "unit": "ms",
          **CONTEXT}  # fmt: skip


def test_the_jobs_section_is_planned_and_reported_with_the_part_it_measures(tmp_path):
    from bench.__main__ import SECTIONS, plan

    assert "jobs" in SECTIONS
    [job] = plan(["jobs"], quick=True, device="cpu", workdir=tmp_path)
    assert job.argv[0] == "bench.jobs" and "--jobs" in job.argv and str(tmp_path / "jobs") in job.argv
    planned = [j.argv[0] for j in plan(list(SECTIONS), quick=True, device="cpu", workdir=tmp_path)]
    assert planned[-3:] == ["bench.jobs", "bench.likeness", "bench.dashboard"]
    [likeness] = plan(["likeness"], quick=True, device="cpu", workdir=tmp_path)
    assert "--prompts" in likeness.argv and str(tmp_path / "likeness") in likeness.argv
    submit, follow = table([JOBS, FOLLOW]).splitlines()[-2:]
    assert "| part=push_training_set | 0.214 s |" in submit and "`python -m bench --only jobs`" in submit
    assert "cpu_ms_per_min 177, log_ms_per_line 0.4" in follow


def test_the_fake_hubs_log_stream_gives_each_line_its_time():
    from bench.jobs import parse_log_events

    stream = (
        'data: {"data": "===== Job started", "timestamp": "2026-01-01T00:00:00.000Z"}\n\n: keep-alive\n\n'
        'data: {"data": "{\\"event\\": \\"progress\\", \\"step\\": 1}", "timestamp": "2026-01-01T00:00:01.250Z"}\n\n'
    )
    (started, first), (stamp, line) = parse_log_events(stream)
    assert first == "===== Job started" and line == '{"event": "progress", "step": 1}'
    assert stamp - started == pytest.approx(1.25)


def test_the_dashboard_bench_times_a_refresh_of_its_seeded_week(tmp_path):
    from bench.dashboard import parse_args, run

    records = run(parse_args(["--workdir", str(tmp_path), "--tunes", "5", "--prompts", "40", "--reps", "1"]))
    assert [item["bench"] for item in records] == [
        "dashboard.dashboard_day",
        "dashboard.dashboard_week",
        "dashboard.tables",
    ]
    assert all(item["unit"] == "ms" and item["value"] > 0 and item["prompts"] == 40 for item in records)
