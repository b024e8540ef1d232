"""The results table in bench/README.md, rendered from the records of a run (`python -m bench` writes it).

    python -m bench.report [bench/results.json]     # re-render the table from saved results

One row per figure: what was measured, its parameters, the value (p50 with p99 for latencies), the
figures that go with it (calls/s, errors and training steps/s under load; a LoRA switch seen from outside),
and the command that measures it again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT

README = ROOT / "bench" / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# parameters that tell rows of one figure apart (the rest is in results.json)
KEYS = ("model", "batch_size", "cache_latents", "resolution", "component", "num_images", "lora", "cache",
        "prompts", "call", "concurrency", "interface", "clients", "part")  # fmt: skip
COMMANDS = {
    "train.": "python -m bench --only train",
    "generate.": "python -m bench --only generate",
    "service.": "python -m bench --only service",
    "load.": "python -m bench --only load",
    "jobs.": "python -m bench --only jobs",
}
CONTEXT = ("device_name", "threads", "torch", "commit")
# figures that come with a record and belong next to its value (under load: throughput, failures, the training)
ALSO = ("calls_per_s", "errors", "training_steps_per_s", "server_cpu_ms_per_call", "server_cpu_s", "call_delta_ms",
        "lora_file_reads", "first_line_after_s", "line_to_record_ms", "cpu_ms_per_min", "log_ms_per_line",
        "tick_cpu_ms")  # fmt: skip


def table(records: list[dict[str, Any]]) -> str:
    """A markdown table of every record, with the run's context above it."""
    if not records:
        return "_No results yet: run `make bench`._"
    first = records[0]
    context = ", ".join(f"{key} `{first.get(key)}`" for key in CONTEXT)
    lines = [
        f"Last run: {context}.",
        "",
        "| figure | parameters | value | p99 | also | reproduce |",
        "|---|---|---|---|---|---|",
    ]
    for item in records:
        params = ", ".join(f"{key}={item[key]}" for key in KEYS if key in item)
        command = next((cmd for prefix, cmd in COMMANDS.items() if item["bench"].startswith(prefix)), "")
        if item.get("model") == "sd15-arch":
            command = "python -m bench --only real"
        p99 = f"{_number(item['p99'])} {item['unit']}" if item.get("p99") is not None else ""
        also = ", ".join(f"{key} {_number(item[key])}" for key in ALSO if item.get(key) is not None)
        value = f"{_number(item['value'])} {item['unit']}"
        lines.append(f"| `{item['bench']}` | {params} | {value} | {p99} | {also} | `{command}` |")
    return "\n".join(lines)


def write_table(records: list[dict[str, Any]], readme: Path = README) -> None:
    """Replace the text between the results markers of `readme` with the table (the markers must exist)."""
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{table(records)}\n{END}{tail}")


def _number(value: float) -> str:
    if value != value:  # NaN: no sample
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def main(argv: list[str] | None = None) -> None:
    path = Path((argv or sys.argv[1:] or [str(ROOT / "bench" / "results.json")])[0])
    write_table(json.loads(path.read_text()))


if __name__ == "__main__":
    main()
